package interp

import (
	"fmt"
	"strings"

	esbuild "github.com/evanw/esbuild/pkg/api"
)

// transpile turns TypeScript into JavaScript for the Node driver with
// esbuild (pure Go, so the agent stays static). Types are stripped, not
// checked: type errors never block a run, as in `tsc --noCheck` or Deno.
// Syntax errors come back as an ExecError named SyntaxError.
//
// Code with static `import` or `export` statements cannot run as a script;
// it is converted to CommonJS (require), unless it also awaits at the top
// level, which CommonJS cannot express; then the imports stay and the run
// reports the SyntaxError Node gives (use `await import(...)` or require).
//
// JavaScript goes through esbuild only when it has import or export
// statements, for the same conversion; otherwise it runs as written.
func transpile(lang Language, code string) (string, *ExecError) {
	if lang == JavaScript && !hasModuleSyntax(code) {
		return code, nil
	}
	loader, file := esbuild.LoaderTS, "cell.ts"
	if lang == JavaScript {
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
	if hasModuleSyntax(code) {
		cjs := opts
		cjs.Format = esbuild.FormatCommonJS
		if res := esbuild.Transform(code, cjs); len(res.Errors) == 0 {
			return string(res.Code), nil
		}
	}
	if lang == JavaScript {
		return code, nil // let Node report it, with its own words
	}
	res := esbuild.Transform(code, opts)
	if len(res.Errors) > 0 {
		return "", syntaxError(res.Errors)
	}
	return string(res.Code), nil
}

// hasModuleSyntax reports whether a line starts with import or export: a
// cheap test that may be wrong (a line of a template literal, say), which
// only costs a second transform.
func hasModuleSyntax(code string) bool {
	for line := range strings.Lines(code) {
		t := strings.TrimLeft(line, " \t")
		if strings.HasPrefix(t, "import ") || strings.HasPrefix(t, "import{") || strings.HasPrefix(t, "export ") {
			return true
		}
	}
	return false
}

func syntaxError(msgs []esbuild.Message) *ExecError {
	e := &ExecError{Name: "SyntaxError", Value: msgs[0].Text, Traceback: []string{}}
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
