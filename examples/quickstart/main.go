// Command quickstart is the README's five-minute tour, done with the Go SDK
// instead of the CLI: run a command in a sandbox that the first call
// creates, keep shell state between calls, stream output, hit a timeout,
// feed stdin, make a sandbox with options, list, and clean up.
//
//	make run                        # in one shell, as root
//	SANDBOX_TOKEN=$(sudo cat /var/lib/sandboxd/token) go run ./examples/quickstart
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	c, err := client.FromEnv() // SANDBOX_URL (default http://127.0.0.1:7070), SANDBOX_TOKEN
	if err != nil {
		return err
	}
	h, err := c.Health(ctx)
	if err != nil {
		return fmt.Errorf("is sandboxd running? %w", err)
	}
	fmt.Printf("sandboxd %s, runtime %s\n", h.Version, h.Runtime)

	// The first call naming "demo" creates it; later calls reuse it.
	demo := c.Sandbox("demo")
	defer func() {
		// Destroy takes its own context, so that it runs after Ctrl-C too.
		cleanup, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, sb := range []*client.Sandbox{demo, c.Sandbox("offline")} {
			if err := sb.Destroy(cleanup); err != nil && !errors.Is(err, client.ErrNotFound) {
				log.Printf("destroying %s: %v", sb.ID(), err)
			}
		}
	}()

	// sandbox exec demo -- python3 -c 'print(2+2)'
	res, err := demo.Exec(ctx, "python3 -c 'print(2+2)'")
	if err != nil {
		return err
	}
	fmt.Printf("2+2 = %s", res.Stdout)

	// Shell state persists between calls in the default session.
	if _, err := demo.Exec(ctx, "cd /tmp && export NAME=world"); err != nil {
		return err
	}
	res, err = demo.Exec(ctx, "echo hello $NAME from $(pwd)")
	if err != nil {
		return err
	}
	fmt.Print(res.Stdout) // hello world from /tmp

	// A non-zero exit is a result, not an error.
	res, err = demo.Exec(ctx, "ls /no/such/dir")
	if err != nil {
		return err
	}
	fmt.Printf("ls exited %d: %s", res.ExitCode, res.Stderr)

	// Stream output as it is produced.
	st, err := demo.ExecStream(ctx, "for i in 1 2 3; do echo $i; sleep 1; done")
	if err != nil {
		return err
	}
	for ev, err := range st.All() {
		if err != nil {
			return err
		}
		switch ev.Type {
		case api.EventStdout:
			fmt.Printf("%s streamed: %s", time.Now().Format("15:04:05"), ev.Data)
		case api.EventComplete:
			fmt.Println("stream complete, exit code", *ev.ExitCode)
		}
	}

	// A timeout kills the command and still returns what it printed.
	res, err = demo.Exec(ctx, "echo before; sleep 60", client.WithTimeout(2*time.Second))
	if !errors.Is(err, client.ErrTimeout) {
		return fmt.Errorf("want a timeout, got %v", err)
	}
	fmt.Printf("timed out (%v) after printing %q\n", err, res.Stdout)

	// Stdin, per-command env and working directory.
	res, err = demo.Exec(ctx, "tr a-z A-Z; echo \"$GREETING from $(pwd)\"",
		client.WithStdin([]byte("shout\n")),
		client.WithEnv(map[string]string{"GREETING": "hi"}),
		client.WithCwd("/"))
	if err != nil {
		return err
	}
	fmt.Print(res.Stdout)

	// A sandbox with options: no network, 256 MiB, 128 processes.
	offline := c.Sandbox("offline",
		client.WithNetwork(api.NetworkOptions{Mode: api.NetworkNone}),
		client.WithLimits(api.Limits{MemoryBytes: 256 << 20, Pids: 128}),
		client.WithLabels(map[string]string{"tour": "yes"}),
	)
	res, err = offline.Exec(ctx, "ls /sys/class/net")
	if err != nil {
		return err
	}
	fmt.Printf("offline's network interfaces: %s", res.Stdout) // lo

	list, err := c.List(ctx)
	if err != nil {
		return err
	}
	for _, sb := range list {
		fmt.Printf("%-10s %-8s %-6s network=%s\n", sb.ID, sb.Status, sb.Image, sb.Network.Mode)
	}
	return nil
}
