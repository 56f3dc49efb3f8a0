package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// AdminProcess is a command started in a running gVisor container with
// CAP_SYS_ADMIN (see ExecAdmin) that stays up and answers each line it is
// sent with one line. Starting it costs a `runsc exec` (a runsc process,
// a call to the sandbox, a new process in it: about 200 ms); a call then
// costs a pipe round trip. It belongs to its caller, who Closes it.
type AdminProcess struct {
	// Hello is what the command said after AdminReady on its first line
	// ("" if nothing): what it offers beyond answering lines.
	Hello string

	cmd   *exec.Cmd
	in    *os.File // the command's stdin
	out   *bufio.Reader
	outf  *os.File // the command's stdout, which carries read deadlines
	done  chan struct{}
	close sync.Once
}

// maxAdminAnswer bounds an answer line.
const maxAdminAnswer = 4096

// AdminReady is the line an admin process says first, once it runs.
const AdminReady = "ready"

// StartAdmin starts args in the running container id as ExecAdmin does,
// and waits, within ctx, until it says AdminReady; it talks over pipes.
func (r *Runtime) StartAdmin(ctx context.Context, id string, args ...string) (*AdminProcess, error) {
	if r.Name != GVisor {
		return nil, fmt.Errorf("%s: StartAdmin is for gVisor only", r.Name)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cmdArgs := append(r.globalArgs(), "exec", "--cap", "CAP_SYS_ADMIN", id)
	cmd := exec.Command(r.Path, append(cmdArgs, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, outW
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("runsc exec: %w", err)
	}
	p := &AdminProcess{cmd: cmd, in: inW, outf: outR, out: bufio.NewReaderSize(outR, maxAdminAnswer), done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	hello, err := p.read(ctx)
	if err == nil {
		word, rest, _ := strings.Cut(hello, " ")
		if word != AdminReady {
			err = fmt.Errorf("runsc exec: %q", hello)
		}
		p.Hello = rest
	}
	if err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Call sends line and returns the answer line, within ctx.
func (p *AdminProcess) Call(ctx context.Context, line string) (string, error) {
	if err := p.Send(ctx, line); err != nil {
		return "", err
	}
	return p.Answer(ctx)
}

// Send sends line without waiting for its answer, which Answer reads.
func (p *AdminProcess) Send(ctx context.Context, line string) error {
	p.in.SetWriteDeadline(deadlineOf(ctx))
	if _, err := p.in.WriteString(line + "\n"); err != nil {
		return fmt.Errorf("runsc exec: sending: %w", err)
	}
	return nil
}

// Answer reads the answer to the line Send sent, within ctx.
func (p *AdminProcess) Answer(ctx context.Context) (string, error) {
	return p.read(ctx)
}

func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(time.Minute)
}

// read reads one answer line within ctx.
func (p *AdminProcess) read(ctx context.Context) (string, error) {
	p.outf.SetReadDeadline(deadlineOf(ctx))
	stop := context.AfterFunc(ctx, func() { p.outf.SetReadDeadline(time.Now()) })
	defer stop()
	answer, err := p.out.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("runsc exec: reading the answer: %w", err)
	}
	return strings.TrimSuffix(string(answer), "\n"), nil
}

// Close ends the command: its stdin is closed (at EOF it exits), and
// runsc is killed if it has not gone within a second. Killing runsc alone
// would not stop the command inside the container. Calls after the first
// wait for it.
func (p *AdminProcess) Close() {
	p.close.Do(func() {
		p.in.Close()
		select {
		case <-p.done:
		case <-time.After(time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		p.outf.Close()
	})
}
