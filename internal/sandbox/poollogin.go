package sandbox

import "context"

// prepareLogin makes the warm pool's sandbox w ready for login processes
// of Options.PoolLoginUser in its home, before it joins the pool: the
// agent creates the account and starts the login shell those processes
// are forked from (agentapi.Client.PrepareLogin). The E2B layer runs
// every command as such a process of its default user, so a sandbox it
// creates from the pool answers its first command without creating the
// user or starting that shell (which doubled the time from an E2B create
// to the first command's result). Its cost is the pool's: a pooled sandbox
// holds the account and one idle shell of it, whoever takes it. It runs
// after the boot turn was given back; a failure costs only that speed.
//
// Not in a gVisor sandbox: there the idle login shell made every take
// slower (the take's naming p50 7 -> 23 ms, the whole take 23 -> 38 ms,
// quiet, bench/results/gvisor.txt), more than it saves an E2B create.
func (m *Manager) prepareLogin(ctx context.Context, w *box) {
	user := m.opts.PoolLoginUser
	inst := w.running
	if user == "" || inst == nil || inst.agent == nil || w.isGVisor() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, agentBootTimeout)
	defer cancel()
	if err := inst.agent.PrepareLogin(ctx, user); err != nil && ctx.Err() == nil {
		m.log.Warn("preparing a warm sandbox for login processes", "key", w.rec.Key, "user", user, "err", err)
	}
}
