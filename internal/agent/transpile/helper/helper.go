// Package helper is the TypeScript helper's program (`sandbox-transpile`):
// it transpiles code interpreter cells with esbuild's Go API (pure Go, so
// the helper is static like the agent) and answers the agent on stdin and
// stdout (package transpile). It runs only what it is given as data: it
// never executes, opens or writes anything of a cell.
package helper

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	esbuild "github.com/evanw/esbuild/pkg/api"

	"github.com/sandboxd/sandboxd/internal/agent/transpile"
)

// Main runs the helper with the arguments after the program's name. It
// never returns.
func Main(args []string) {
	if len(args) != 1 || args[0] != transpile.Arg {
		fmt.Fprintf(os.Stderr, "usage: sandbox-transpile %s (frames on stdin and stdout)\n", transpile.Arg)
		os.Exit(2)
	}
	if err := Serve(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox-transpile: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Serve answers requests read from r on w until r ends.
func Serve(r io.Reader, w io.Writer) error {
	in := bufio.NewReader(r)
	for {
		var req transpile.Request
		if err := transpile.ReadFrame(in, &req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := transpile.WriteFrame(w, Transpile(req.Language, req.Code)); err != nil {
			return err
		}
	}
}

// Transpile turns a cell into JavaScript for the Node driver. Types are
// stripped, not checked: type errors never block a run, as in
// `tsc --noCheck` or Deno. Syntax errors come back as a SyntaxError.
//
// Code with static `import` or `export` statements cannot run as a script;
// it is converted to CommonJS (require), unless it also awaits at the top
// level, which CommonJS cannot express; then the imports stay and the run
// reports the SyntaxError Node gives (use `await import(...)` or require).
// JavaScript is converted only for that (the agent sends only JavaScript
// with such statements); when it cannot be, it runs as written.
func Transpile(lang transpile.Language, code string) transpile.Reply {
	loader, file := esbuild.LoaderTS, "cell.ts"
	if lang == transpile.JavaScript {
		loader, file = esbuild.LoaderJS, "cell.js"
	}
	opts := esbuild.TransformOptions{
		Loader:     loader,
		Target:     esbuild.ESNext,
		Sourcefile: file,
		LogLevel:   esbuild.LogLevelSilent,
		// Keep every import, whether or not it looks used: a cell's
		// imports are meant for later cells too.
		TsconfigRaw: `{"compilerOptions":{"verbatimModuleSyntax":true}}`,
	}
	if transpile.HasModuleSyntax(code) {
		cjs := opts
		cjs.Format = esbuild.FormatCommonJS
		if res := esbuild.Transform(code, cjs); len(res.Errors) == 0 {
			return transpile.Reply{Code: string(res.Code)}
		}
	}
	if lang == transpile.JavaScript {
		return transpile.Reply{Code: code} // let Node report it, with its own words
	}
	res := esbuild.Transform(code, opts)
	if len(res.Errors) > 0 {
		return transpile.Reply{Error: syntaxError(res.Errors)}
	}
	return transpile.Reply{Code: string(res.Code)}
}

func syntaxError(msgs []esbuild.Message) *transpile.SyntaxError {
	e := &transpile.SyntaxError{Name: "SyntaxError", Value: msgs[0].Text, Traceback: []string{}}
	for _, m := range msgs {
		if m.Location != nil {
			e.Traceback = append(e.Traceback, fmt.Sprintf("%s:%d:%d: %s", m.Location.File, m.Location.Line, m.Location.Column+1, m.Text))
			if m.Location.LineText != "" {
				e.Traceback = append(e.Traceback, "    "+m.Location.LineText)
			}
		} else {
			e.Traceback = append(e.Traceback, m.Text)
		}
	}
	return e
}
