//go:build sandboxd_precompile

// This file is copied into gVisor's runsc/boot/filter/config by
// scripts/deps.sh (it needs that package's unexported rules). The build tag
// keeps it out of runsc itself.

package config

import (
	"gvisor.dev/gvisor/pkg/seccomp"
	"gvisor.dev/gvisor/pkg/seccomp/precompiledseccomp"
)

// SandboxdPrograms compiles the Sentry's seccomp programs for every
// option set PrecompiledPrograms covers without a device proxy (NVIDIA,
// TPU, RDMA), which sandboxd never enables: every platform, network mode
// and directfs setting. They are the programs runsc would compile at each
// boot and restore, compiled by the same code, with the run-time values
// (the controller FD, the PID, the platform's) left as variables.
func SandboxdPrograms() ([]precompiledseccomp.Program, error) {
	opts, err := optionsToPrecompile()
	if err != nil {
		return nil, err
	}
	var programs []precompiledseccomp.Program
	for _, opt := range opts {
		if opt.NVProxy || opt.TPUProxy || opt.RDMAProxy {
			continue
		}
		var varNames []string
		for varName := range opt.Vars() {
			varNames = append(varNames, varName)
		}
		program, err := precompiledseccomp.Precompile(opt.ConfigKey(), varNames, func(vars precompiledseccomp.Values) *seccomp.Program {
			rules, denyRules := rules(opt, vars)
			return &seccomp.Program{
				RuleSets: []seccomp.RuleSet{
					{Rules: denyRules.Copy()},
					{Rules: rules.Copy(), Action: seccomp.Allow},
				},
				Options: SeccompOptions(opt),
			}
		})
		if err != nil {
			return nil, err
		}
		programs = append(programs, program)
	}
	return programs, nil
}
