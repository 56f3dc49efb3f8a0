package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

type runCodeFlags struct {
	lang    string
	context string
	timeout time.Duration
	out     string
	asJSON  bool
}

func newRunCodeCommand(g *globals) *cobra.Command {
	var f runCodeFlags
	cmd := &cobra.Command{
		Use:   "run-code [flags] ID [FILE|-]",
		Short: "Run Python, JavaScript or TypeScript in a sandbox's code interpreter",
		Long: `Run code in a code context of the sandbox ID (created on first use): a
persistent interpreter whose variables, imports and functions carry over to
the next run-code in the same context. The code comes from FILE, or from
standard input when FILE is - or missing.

Without --context the default context of --lang (python, javascript or
typescript; default python) is used. Create more contexts with the SDK or
the API; list them with 'sandbox contexts ID'.

What the code prints streams as it happens: its stdout to stdout, its
stderr to stderr. Each result (the last expression's value, display()
calls, matplotlib figures) is printed as text; images are written to files
in --out DIR (result-N.png, .jpeg or .svg), else only named. An error
raised by the code prints its traceback to stderr and exits 1. With --json
nothing streams: the whole result is printed as JSON at the end.

Exit codes: 0; 1 when the code raised an error (124 for a timeout); 125
when sandbox itself failed (CONTEXT_TERMINATED when the interpreter died);
130 when interrupted (the run is interrupted, the context keeps its state).`,
		Example: `  echo 'import math; math.pi * 5 ** 2' | sandbox run-code demo
  sandbox run-code demo analysis.py --out charts/
  sandbox run-code --lang typescript demo script.ts
  sandbox run-code --context 3f1c... --json demo - < cell.py`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("want ID and at most one FILE, got %d argument(s)", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			file := "-"
			if len(args) == 2 {
				file = args[1]
			}
			return runCode(cmd.Context(), g, f, args[0], file)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.lang, "lang", "", "language of the default context: python, javascript or typescript (default python)")
	fl.StringVar(&f.context, "context", "", "run in this code context instead of the language's default one")
	fl.DurationVar(&f.timeout, "timeout", 0, "interrupt the run after this long, e.g. 30s (default 60s); the context keeps its state")
	fl.StringVar(&f.out, "out", "", "write image results to files in this directory")
	fl.BoolVar(&f.asJSON, "json", false, "print the whole result as JSON at the end instead of streaming")
	return cmd
}

// readCode reads the code from file, or from stdin for "-".
func readCode(ctx context.Context, g *globals, file string) (string, error) {
	if file == "-" {
		data, err := readStdin(ctx, g.e.stdin)
		if err != nil {
			return "", err
		}
		return string(data), nil
	}
	f, err := os.Open(file)
	if err != nil {
		return "", &usageError{cmd: "sandbox run-code", err: err}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, api.MaxCodeBytes+1))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", file, err)
	}
	if len(data) > api.MaxCodeBytes {
		return "", &usageError{cmd: "sandbox run-code", err: fmt.Errorf("%s is larger than %d MiB, the most run-code accepts", file, api.MaxCodeBytes>>20)}
	}
	return string(data), nil
}

func runCode(ctx context.Context, g *globals, f runCodeFlags, id, file string) error {
	switch f.lang {
	case "", "python", "javascript", "typescript":
	case "js":
		f.lang = "javascript"
	case "ts":
		f.lang = "typescript"
	case "py":
		f.lang = "python"
	default:
		return &usageError{cmd: "sandbox run-code", err: fmt.Errorf("--lang %q: want python, javascript or typescript", f.lang)}
	}
	if f.timeout < 0 {
		return &usageError{cmd: "sandbox run-code", err: fmt.Errorf("--timeout %s is negative", f.timeout)}
	}
	if f.out != "" {
		if err := os.MkdirAll(f.out, 0o755); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
	}
	code, err := readCode(ctx, g, file)
	if err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	o := client.RunCodeOptions{Context: f.context, Language: api.CodeLanguage(f.lang), Timeout: f.timeout}
	p := &resultPrinter{w: g.e.stdout, errW: g.e.stderr, dir: f.out}
	if !f.asJSON {
		o.CodeCallbacks = client.CodeCallbacks{
			OnStdout: func(b []byte) { g.e.stdout.Write(b) },
			OnStderr: func(b []byte) { g.e.stderr.Write(b) },
			OnResult: p.result,
			OnError:  p.error,
		}
	}
	res, err := c.Sandbox(id).RunCode(ctx, code, o)
	if err != nil {
		return err
	}
	if f.asJSON {
		if f.out != "" {
			for _, r := range res.Results {
				p.saveImages(r)
			}
		}
		if err := printJSON(g.e.stdout, res); err != nil {
			return err
		}
	}
	if p.err != nil {
		return p.err
	}
	if res.Error != nil {
		if res.Error.Name == "TimeoutError" {
			return exitStatus(exitTimeout)
		}
		return exitStatus(1)
	}
	return nil
}

// resultPrinter prints results and errors as they arrive.
type resultPrinter struct {
	w, errW io.Writer
	dir     string
	n       int
	err     error // the first failure to write a file
}

func (p *resultPrinter) result(r api.CodeResult) {
	paths := p.saveImages(r)
	switch {
	case r.Text != "" && len(paths) == 0:
		fmt.Fprintln(p.w, r.Text)
	case len(paths) > 0:
		for _, path := range paths {
			fmt.Fprintf(p.w, "[%s]\n", path)
		}
	default:
		fmt.Fprintf(p.w, "[result: %s]\n", strings.Join(r.Formats(), ", "))
	}
}

// saveImages writes r's images into the output directory and returns
// their paths, or describes them when there is no directory.
func (p *resultPrinter) saveImages(r api.CodeResult) []string {
	var out []string
	for _, img := range []struct {
		ext, data string
		b64       bool
	}{{"png", r.PNG, true}, {"jpeg", r.JPEG, true}, {"svg", r.SVG, false}} {
		if img.data == "" {
			continue
		}
		p.n++
		if p.dir == "" {
			out = append(out, fmt.Sprintf("%s image, %d bytes; save it with --out DIR", img.ext, len(img.data)))
			continue
		}
		data := []byte(img.data)
		if img.b64 {
			var err error
			if data, err = base64.StdEncoding.DecodeString(img.data); err != nil {
				p.fail(fmt.Errorf("decoding a %s result: %w", img.ext, err))
				continue
			}
		}
		path := filepath.Join(p.dir, fmt.Sprintf("result-%d.%s", p.n, img.ext))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			p.fail(err)
			continue
		}
		out = append(out, path)
	}
	return out
}

func (p *resultPrinter) fail(err error) {
	if p.err == nil {
		p.err = err
	}
}

func (p *resultPrinter) error(e api.ExecutionError) {
	for _, l := range e.Traceback {
		fmt.Fprintln(p.errW, l)
	}
	if e.Value != "" {
		fmt.Fprintf(p.errW, "%s: %s\n", e.Name, e.Value)
	} else {
		fmt.Fprintln(p.errW, e.Name)
	}
}

func newContextsCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "contexts [--json] ID",
		Short: "List a sandbox's code contexts",
		Long: `List the code contexts of the sandbox ID, oldest first, as a table: ID,
LANGUAGE, STATUS (ready, or terminated when the interpreter died), RUNS (the
execution count), CWD, CREATED and LAST-USED. With --json, print the API's
answer, {"contexts": [...]}.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			list, err := c.Sandbox(args[0]).ListCodeContexts(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if list == nil {
					list = []api.CodeContext{}
				}
				return printJSON(g.e.stdout, api.CodeContextList{Contexts: list})
			}
			now := g.e.now()
			t := newTable("ID\tLANGUAGE\tSTATUS\tRUNS\tCWD\tCREATED\tLAST-USED")
			for _, x := range list {
				status := x.Status
				if x.Running {
					status += " (running)"
				}
				t.row("%s\t%s\t%s\t%d\t%s\t%s\t%s", x.ID, x.Language, status, x.ExecutionCount, x.Cwd, ago(now, x.CreatedAt), ago(now, x.LastUsed))
			}
			return t.write(g.e.stdout)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
