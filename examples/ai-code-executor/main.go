// Command ai-code-executor is the reference SDK's "Build an AI code
// executor" tutorial in Go: take Python code, write it into a sandbox, run
// it, and report stdout, stderr and the exit code as JSON.
//
// The tutorial asks Claude to write the code from a question. This example
// has no LLM in it: the code comes from -file, from -code, or from stdin,
// and -question is only echoed back. To make it an AI executor, put your
// model call where readCode is, and pass its answer on unchanged: the
// sandbox, not the model, is what makes running it safe.
//
//	go run ./examples/ai-code-executor -question "10th Fibonacci number?" -file fib.py
//	echo 'print(sum(range(101)))' | go run ./examples/ai-code-executor
//
// The daemon is found through SANDBOX_URL and SANDBOX_TOKEN (see package
// client's FromEnv).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/sandboxd/sandboxd/client"
)

// defaultQuestion and defaultCode stand in for a question and what a model
// would answer to it.
const defaultQuestion = "What is the 10th Fibonacci number?"

const defaultCode = `def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

print(fibonacci(10))
`

// response is what the tutorial's Worker returns.
type response struct {
	Success  bool   `json:"success"`
	Question string `json:"question,omitempty"`
	Code     string `json:"code"`
	Output   string `json:"output"`
	Error    string `json:"error"`
	ExitCode int    `json:"exitCode"`
	Duration string `json:"duration"`
}

func main() {
	question := flag.String("question", "", "the question the code answers (only echoed: there is no LLM here)")
	file := flag.String("file", "", "read the Python code from this file")
	code := flag.String("code", "", "the Python code itself")
	sandboxID := flag.String("sandbox", "demo-user", "the sandbox to run in (created on first use)")
	timeout := flag.Duration("timeout", 30*time.Second, "kill the code after this long")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *question, *file, *code, *sandboxID, *timeout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, question, file, code, sandboxID string, timeout time.Duration) error {
	src, err := readCode(file, code)
	if err != nil {
		return err
	}
	if src == defaultCode && question == "" {
		question = defaultQuestion
	}
	c, err := client.FromEnv()
	if err != nil {
		return err
	}
	sb := c.Sandbox(sandboxID) // like getSandbox(env.Sandbox, "demo-user")

	// sandbox.writeFile('/workspace/code.py', code): the code goes in as
	// the stdin of cat, so no quoting of it is ever needed.
	_, err = sb.Exec(ctx, "mkdir -p /workspace && cat > /workspace/code.py", client.WithStdin([]byte(src)))
	if err != nil {
		return fmt.Errorf("writing the code: %w", err)
	}

	// sandbox.exec('python3 /workspace/code.py')
	res, err := sb.Exec(ctx, "python3 /workspace/code.py", client.WithTimeout(timeout))
	switch {
	case errors.Is(err, client.ErrTimeout):
		// res holds what the code printed before it was killed.
		res.Stderr += fmt.Sprintf("\n[killed after %s]\n", timeout)
	case err != nil:
		return fmt.Errorf("running the code: %w", err)
	}

	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	return out.Encode(response{
		Success:  res.Success,
		Question: question,
		Code:     src,
		Output:   res.Stdout,
		Error:    res.Stderr,
		ExitCode: res.ExitCode,
		Duration: res.Duration().String(),
	})
}

// readCode returns the code to run: from file, else code, else stdin when
// it is not a terminal, else the built-in example. This is where an LLM
// call would go.
func readCode(file, code string) (string, error) {
	switch {
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading the code: %w", err)
		}
		return string(data), nil
	case code != "":
		return code, nil
	}
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice == 0 {
		data, err := io.ReadAll(os.Stdin)
		if err != nil {
			return "", fmt.Errorf("reading the code from stdin: %w", err)
		}
		if len(data) > 0 {
			return string(data), nil
		}
	}
	return defaultCode, nil
}
