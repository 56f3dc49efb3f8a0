package testdaemon

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
)

// The daemons of this process that are not torn down yet, for
// onStopSignal.
var (
	liveMu      sync.Mutex
	live        = map[*Daemon]bool{}
	stopSignals sync.Once
)

func remember(d *Daemon) {
	liveMu.Lock()
	defer liveMu.Unlock()
	live[d] = true
}

func forget(d *Daemon) {
	liveMu.Lock()
	defer liveMu.Unlock()
	delete(live, d)
}

// onStopSignal makes a SIGTERM or SIGINT (a ^C, a killed `go test`, a CI
// job's cancel) tear this process's daemons down before it dies, as
// their tests' cleanups would: their sandboxes destroyed, the daemons
// stopped, their lxcfs, mounts, cgroups and nft tables removed. Without
// it a test binary stopped mid-test left all of them running or mounted.
// The process then dies of the signal, as it would have. A second signal
// during the teardown ends it at once.
func onStopSignal() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-stop
		signal.Reset(syscall.SIGTERM, syscall.SIGINT)
		liveMu.Lock()
		var daemons []*Daemon
		for d := range live {
			daemons = append(daemons, d)
		}
		liveMu.Unlock()
		say := func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "testdaemon: "+format+"\n", args...)
		}
		say("%v: tearing down %d test daemons before exiting", sig, len(daemons))
		var wg sync.WaitGroup
		for _, d := range daemons {
			wg.Go(func() {
				d.tearDown(say, say)
				// Its state is a t.TempDir, which the testing package
				// removes only after a test that ends.
				os.RemoveAll(d.StateDir)
				os.Remove(filepath.Dir(d.StateDir))
			})
		}
		wg.Wait()
		removeBuilt()
		syscall.Kill(os.Getpid(), sig.(syscall.Signal))
	}()
}
