package e2e

import (
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// clusterCoreTests are the core tests (exec, files, processes, ports and
// previews, terminals, code, lifecycle) that TestClusterCore runs through a
// cluster's gateway. They use only the API (the daemon's URL, token and
// client): tests that kill or restart a daemon, or look at its state on
// the host, are for a single daemon and stay out.
var clusterCoreTests = []func(*testing.T){
	// exec
	TestFirstExecCreatesTheSandbox,
	TestExitCodesStdinAndOutput,
	TestTimeoutKillsTheTreeAndKeepsTheSession,
	TestStreamingDeliversOutputAsItIsProduced,
	TestStreamClientDisconnectKillsTheCommand,
	TestLargeOutputIsTruncatedInBufferedResults,
	// files
	TestFilesRoundTrip,
	TestFilesTarSnapshotAndRestore,
	TestFilesWatch,
	TestFilesConcurrentTransfers,
	// processes
	TestProcessLifecycle,
	TestProcessReadinessAndStdin,
	// ports and previews
	TestPreviewURLs,
	TestPreviewIsolation,
	// terminals
	TestTerminalThroughTheDaemon,
	// code
	TestCodeReferenceExamples,
	TestCodeStreamsLive,
	// lifecycle
	TestConcurrentFirstCallsCreateOneSandbox,
	TestStopStartRestartRenew,
}

// TestClusterCore runs the core tests against the first gateway of a real
// three-node cluster (kube-apiserver, nodes, `sandboxd gateway`): the same
// test bodies as against one daemon, with the gateway's URL, token and
// client, so placement, forwarding, streams, WebSockets, file transfers
// and preview hosts are all exercised through it. Each test's sandboxes are
// destroyed after it, as a test's own daemon would be, so lists start
// empty.
func TestClusterCore(t *testing.T) {
	c := startCluster(t, 3)
	gw, err := testdaemon.Gateway(c.gateways[0], c.token)
	if err != nil {
		t.Fatal(err)
	}
	clusterGateway = gw
	t.Cleanup(func() { clusterGateway = nil })
	for _, test := range clusterCoreTests {
		name := runtime.FuncForPC(reflect.ValueOf(test).Pointer()).Name()
		name = name[strings.LastIndex(name, ".")+1:]
		start := time.Now()
		t.Run(name, test)
		t.Logf("%s: %s", name, time.Since(start).Round(100*time.Millisecond))
		destroyAll(t, gw)
	}
}

// destroyAll destroys every sandbox the gateway lists.
func destroyAll(t *testing.T, gw *testdaemon.Daemon) {
	t.Helper()
	ctx := ctxT(t, 2*time.Minute)
	list, err := gw.Client.List(ctx)
	if err != nil {
		t.Fatalf("listing through the gateway: %v", err)
	}
	for _, sb := range list {
		if err := gw.Client.Sandbox(sb.ID).Destroy(ctx); err != nil {
			t.Errorf("destroying %s: %v", sb.ID, err)
		}
	}
}
