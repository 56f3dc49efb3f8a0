package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/sandboxd/sandboxd/internal/doctor"
)

// runDoctor prints the host's report, as a table or as JSON, and returns
// the exit code: 0 when nothing required is missing, 1 otherwise.
func runDoctor(ctx context.Context, o options) int {
	r := doctor.Run(ctx, doctor.Options{
		StateDir: o.cfg.StateDir, NetTable: o.cfg.NetTable, UserNSBase: uint32(o.cfg.UserNSBase), Dev: true,
		First: []doctor.Check{configCheck(o.configErr)},
	})
	if o.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, "sandboxd doctor:", err)
			return 1
		}
	} else {
		printReport(os.Stdout, r)
	}
	if !r.OK {
		return 1
	}
	return 0
}

// configCheck reports whether the flags and config file are valid.
func configCheck(err error) doctor.Check {
	c := doctor.Check{Name: "config", Required: true, Status: doctor.OK, Detail: "the configuration is valid"}
	if err != nil {
		c.Status, c.Detail = doctor.Missing, strings.ReplaceAll(err.Error(), "\n", "; ")
		c.Fix = "correct the flags or the config file (see docs/operations.md)"
	}
	return c
}

// printReport writes one line per check, with the fix indented under each
// one that is not ok, then a verdict.
func printReport(w io.Writer, r doctor.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Status, c.Name, c.Detail)
		if c.Status != doctor.OK && c.Fix != "" {
			fmt.Fprintf(tw, "\t\tfix: %s\n", c.Fix)
		}
	}
	tw.Flush()
	if r.OK {
		fmt.Fprintln(w, "\nthis host can run sandboxd")
	} else {
		fmt.Fprintln(w, "\nthis host cannot run sandboxd until the missing required items above are fixed")
	}
}
