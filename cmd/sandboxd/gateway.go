package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/internal/bytesize"
	"github.com/sandboxd/sandboxd/internal/gateway"
	"github.com/sandboxd/sandboxd/internal/httpserve"
	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/kubekeys"
	"github.com/sandboxd/sandboxd/internal/proxy"
	"github.com/sandboxd/sandboxd/internal/requestid"
)

// gatewayOptions are `sandboxd gateway`'s flags.
type gatewayOptions struct {
	kubeconfig    string
	listen        string
	tokenFile     string
	previewDomain string
	level         slog.Level
	logFormat     string
	maxImage      int64
	spoolDir      string
	// perSource bounds what one source address holds open.
	perSource httpserve.PerSource
}

func parseGatewayFlags(args []string) (gatewayOptions, error) {
	fs := flag.NewFlagSet("sandboxd gateway", flag.ContinueOnError)
	var o gatewayOptions
	var logLevel, maxImage, connsExempt string
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster's Kubernetes API (default: the pod's service account, in a pod)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:7080", "address of the gateway's HTTP API")
	fs.StringVar(&o.tokenFile, "token-file", "/var/lib/sandboxd/token", "the cluster's API token, the same file as every node's <state-dir>/token")
	fs.StringVar(&o.previewDomain, "preview-domain", "localhost", "the nodes' --preview-domain: preview hosts below it go to their sandbox's node")
	fs.StringVar(&maxImage, "max-image-size", "32Gi", "largest image archive imported through the gateway (the nodes' --max-image-size)")
	fs.StringVar(&o.spoolDir, "spool-dir", "", "directory that holds an imported image archive while it is copied to the nodes (default: $TMPDIR or /tmp)")
	fs.IntVar(&o.perSource.Max, "max-conns-per-source", httpserve.DefaultMaxPerSource, "most connections one source address (IPv6: its /64) keeps open; past it a new one is closed at once (0: no bound but the listener's)")
	fs.StringVar(&connsExempt, "conns-per-source-exempt", "loopback", "comma-separated addresses and CIDRs (and loopback) whose connections --max-conns-per-source does not count: a reverse proxy or ingress in front, which forwards many users' calls from one address (empty: none)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text (key=value) or json")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var err error
	if o.maxImage, err = bytesize.Parse(maxImage); err != nil || o.maxImage <= 0 {
		return o, fmt.Errorf("--max-image-size %q: want a size such as 32Gi", maxImage)
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return o, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
	}
	if err := o.level.UnmarshalText([]byte(logLevel)); err != nil {
		return o, fmt.Errorf("--log-level: %w", err)
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return o, fmt.Errorf("--listen %q: %w", o.listen, err)
	}
	if err := proxy.ValidDomain(o.previewDomain); err != nil {
		return o, fmt.Errorf("--preview-domain: %w", err)
	}
	if o.perSource.Max < 0 {
		return o, fmt.Errorf("--max-conns-per-source %d: want 0 (no bound) or more", o.perSource.Max)
	}
	if o.perSource.Exempt, err = httpserve.ParseExempt(connsExempt); err != nil {
		return o, fmt.Errorf("--conns-per-source-exempt %w", err)
	}
	return o, nil
}

// runGateway serves a cluster's gateway until ctx ends.
func runGateway(ctx context.Context, o gatewayOptions, log *slog.Logger) error {
	cfg, err := kubeConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	kc, err := kube.New(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	tok, err := os.ReadFile(o.tokenFile)
	if err != nil {
		return fmt.Errorf("reading the cluster's token: %w", err)
	}
	token := strings.TrimSpace(string(tok))
	if token == "" {
		return fmt.Errorf("the token file %s is empty", o.tokenFile)
	}
	keys, err := kubekeys.Open(ctx, kc)
	if err != nil {
		return fmt.Errorf("the cluster's API keys: %w", err)
	}
	fctx, stopFollow := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() { defer close(followed); kubekeys.Follow(fctx, kc, keys, log) }()
	defer func() { stopFollow(); <-followed }()
	gw := gateway.New(gateway.Options{Directory: gateway.KubeDirectory{Client: kc}, Token: token,
		PreviewDomain: o.previewDomain, Keys: keys, Version: version, Log: log,
		MaxImageBytes: o.maxImage, SpoolDir: o.spoolDir})
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	srv := httpserve.Public(&http.Server{Handler: gw, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}, "gateway", log, o.perSource)
	log.Info("sandboxd gateway serving", "listen", ln.Addr().String(), "namespace", kc.Namespace())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	// Placements through the Sandbox resources' watch: a destroy or move
	// through another gateway is seen at once.
	go gw.Follow(ctx)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Streams and WebSockets may be open for hours: give calls a few
	// seconds, then close what is left.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	srv.Close()
	return nil
}

// kubeConfig loads the kubeconfig file, or the pod's service account
// without one.
func kubeConfig(path string) (*kube.Config, error) {
	if path != "" {
		return kube.LoadKubeconfig(path)
	}
	cfg, err := kube.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no --kubeconfig and not in a pod: %w", err)
	}
	return cfg, nil
}

// gatewayMain is `sandboxd gateway`: it returns the process's exit code.
func gatewayMain(args []string) int {
	o, err := parseGatewayFlags(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandboxd gateway:", err)
		return 2
	}
	hopts := &slog.HandlerOptions{Level: o.level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, hopts)
	if o.logFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, hopts)
	}
	log := slog.New(requestid.Handler(h))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runGateway(ctx, o, log); err != nil {
		log.Error("sandboxd gateway stopped", "err", err)
		return 1
	}
	return 0
}
