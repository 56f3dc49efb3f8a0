package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

// The package example: connect, run a command in the sandbox "user-123"
// (created on first use), and look at its result.
func Example() {
	ctx := context.Background()
	c, err := client.FromEnv() // SANDBOX_URL, SANDBOX_TOKEN
	if err != nil {
		log.Fatal(err)
	}
	sb := c.Sandbox("user-123")
	res, err := sb.Exec(ctx, "python3 -c 'print(2+2)'")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("exit %d in %v: %s", res.ExitCode, res.Duration(), res.Stdout)
}

// A handle with options creates the sandbox with them on its first call.
func ExampleClient_Sandbox() {
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:7070", client.WithToken(os.Getenv("SANDBOX_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	sb := c.Sandbox("ci-job-42",
		client.WithImage("base"),
		client.WithLimits(api.Limits{MemoryBytes: 512 << 20, MilliCPU: 1500}),
		client.WithNetwork(api.NetworkOptions{Mode: api.NetworkNone}),
		client.WithLabels(map[string]string{"job": "42"}),
	)
	defer sb.Destroy(ctx)
	if _, err := sb.Exec(ctx, "make test", client.WithCwd("/workspace"), client.WithTimeout(10*time.Minute)); err != nil {
		log.Fatal(err)
	}
}

// Errors are matched by class with errors.Is; a timed-out command still
// returns the output it printed.
func ExampleSandbox_Exec_timeout() {
	ctx := context.Background()
	c, _ := client.FromEnv()
	res, err := c.Sandbox("demo").Exec(ctx, "for i in 1 2 3; do echo $i; sleep 1; done", client.WithTimeout(1500*time.Millisecond))
	switch {
	case errors.Is(err, client.ErrTimeout):
		fmt.Printf("timed out; output so far: %q\n", res.Stdout)
	case errors.Is(err, client.ErrUnauthorized):
		log.Fatal("wrong token: set SANDBOX_TOKEN")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Print(res.Stdout)
	}
}

// Stream a command's output as it arrives with a range-over-func loop.
func ExampleSandbox_ExecStream() {
	ctx := context.Background()
	c, _ := client.FromEnv()
	st, err := c.Sandbox("demo").ExecStream(ctx, "for i in 1 2 3; do echo $i; sleep 1; done")
	if err != nil {
		log.Fatal(err)
	}
	for ev, err := range st.All() { // All closes the stream when the loop ends
		if err != nil {
			log.Fatal(err) // an error event, a lost stream or a cancelled ctx
		}
		switch ev.Type {
		case api.EventStdout:
			fmt.Print(ev.Data)
		case api.EventStderr:
			fmt.Fprint(os.Stderr, ev.Data)
		case api.EventComplete:
			fmt.Println("exit code", *ev.ExitCode)
		}
	}
}

// The reference SDK's exec(cmd, {stream: true, onOutput}): output goes to
// callbacks as it arrives, and the whole result comes back at the end.
func ExampleWithCallbacks() {
	ctx := context.Background()
	c, _ := client.FromEnv()
	res, err := c.Sandbox("demo").Exec(ctx, "pip install requests", client.WithCallbacks(client.Callbacks{
		OnStdout: func(b []byte) { os.Stdout.Write(b) },
		OnStderr: func(b []byte) { os.Stderr.Write(b) },
	}))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("success:", res.Success)
}
