package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/httpserve"
	"github.com/sandboxd/sandboxd/internal/network"
	"github.com/sandboxd/sandboxd/internal/proxy"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/store"
)

// DialContext connects inside a sandbox's network namespace: the preview
// proxy's way to a sandbox's services (sandbox.PortDialer).
func (n *netAdapter) DialContext(ctx context.Context, netnsPath, nw, address string) (net.Conn, error) {
	return network.DialContext(ctx, netnsPath, nw, address)
}

// loadOrCreateKey returns the preview link signing key kept at path,
// creating it (32 random bytes, mode 0600) on first start, so that signed
// links survive restarts.
func loadOrCreateKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) < 32 {
			return nil, fmt.Errorf("preview key %s is shorter than 32 bytes", path)
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	key = make([]byte, 32)
	rand.Read(key)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating preview key: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		return nil, err
	}
	return key, f.Close()
}

// validatePreview checks the preview settings and fills in the URL port.
func (c *Config) validatePreview() []error {
	var errs []error
	if c.PreviewDomain == "" {
		c.PreviewDomain = "localhost"
	}
	c.PreviewDomain = strings.TrimSuffix(strings.ToLower(c.PreviewDomain), ".")
	if err := proxy.ValidDomain(c.PreviewDomain); err != nil {
		errs = append(errs, fmt.Errorf("--preview-domain: %w", err))
	}
	if c.PreviewScheme == "" {
		c.PreviewScheme = "http"
		if c.TLS() {
			c.PreviewScheme = "https"
		}
	}
	if c.PreviewScheme != "http" && c.PreviewScheme != "https" {
		errs = append(errs, fmt.Errorf("--preview-scheme %q: want http or https", c.PreviewScheme))
	}
	if l := c.PreviewLimits; l.MaxHeaderBytes < 4<<10 || l.MaxHeaderBytes > 16<<20 {
		errs = append(errs, fmt.Errorf("--preview-max-header-bytes %d: want 4Ki to 16Mi", l.MaxHeaderBytes))
	}
	if l := c.PreviewLimits; l.HeaderTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--preview-header-timeout %s: want at least 1s", l.HeaderTimeout))
	}
	if l := c.PreviewLimits; l.MaxInFlightPerSandbox < 1 || l.MaxInFlight < l.MaxInFlightPerSandbox {
		errs = append(errs, fmt.Errorf("--preview-max-inflight-per-sandbox %d and --preview-max-inflight %d: want 1 <= per sandbox <= in all",
			l.MaxInFlightPerSandbox, l.MaxInFlight))
	}
	if c.PreviewPort < 0 || c.PreviewPort > 65535 {
		errs = append(errs, fmt.Errorf("--preview-port %d: want 0 to 65535", c.PreviewPort))
	}
	if c.PreviewPort == 0 {
		listen := c.PreviewListen
		if listen == "" {
			listen = c.Listen
		}
		if _, port, err := net.SplitHostPort(listen); err == nil {
			c.PreviewPort, _ = strconv.Atoi(port)
		}
	}
	return errs
}

// preview is the daemon's side of preview URLs: the exposed ports, the
// link signer, the proxy and, when one is configured, the preview
// listener.
type preview struct {
	ports  *proxy.Registry
	signer *proxy.Signer
	proxy  *proxy.Proxy
	ln     net.Listener // nil: previews come in on the API listener only
	// perSource bounds what one source holds open on ln.
	perSource httpserve.PerSource
}

// reloadInterval is how often the copy in memory of the exposed ports is
// refreshed from the registry (which drops the ports of destroyed
// sandboxes with them).
const reloadInterval = time.Minute

func newPreview(ctx context.Context, cfg Config, reg *store.Store, mgr *sandbox.Manager, ln net.Listener, log *slog.Logger) (*preview, error) {
	ports, err := proxy.NewRegistry(ctx, reg, nil)
	if err != nil {
		return nil, fmt.Errorf("loading exposed ports: %w", err)
	}
	key, err := loadOrCreateKey(filepath.Join(cfg.StateDir, "preview.key"))
	if err != nil {
		return nil, err
	}
	pv := &preview{
		ports:  ports,
		signer: proxy.NewSigner(key),
		proxy:  proxy.New(proxy.Options{Dial: mgr.DialPort, Log: log, Limits: cfg.PreviewLimits, JoinConnections: cfg.PreviewJoin}),
	}
	pv.ln = ln
	if pv.perSource, err = cfg.connsPerSource(); err != nil {
		return nil, err
	}
	return pv, nil
}

func (pv *preview) options(cfg Config) httpapi.PreviewConfig {
	return httpapi.PreviewConfig{Domain: cfg.PreviewDomain, Scheme: cfg.PreviewScheme, Port: cfg.PreviewPort}
}

// tasks are the preview's goroutines for the daemon's errgroup: the
// preview listener, if any, and the periodic reload of exposed ports.
func (pv *preview) tasks(api *httpapi.Server, log *slog.Logger) []func(context.Context) error {
	tasks := []func(context.Context) error{func(ctx context.Context) error {
		defer pv.proxy.Close()
		t := time.NewTicker(reloadInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if err := pv.ports.Reload(ctx); err != nil && ctx.Err() == nil {
					log.Warn("reloading exposed ports", "err", err)
				}
			}
		}
	}}
	if pv.ln != nil {
		srv := httpserve.Public(&http.Server{Handler: api.PreviewHandler(), ConnContext: proxy.WithConn}, "preview", log, pv.perSource)
		log.Info("serving previews", "listen", pv.ln.Addr().String())
		tasks = append(tasks, func(ctx context.Context) error {
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := srv.Shutdown(sctx); err != nil {
					srv.Close()
				}
			}()
			if err := srv.Serve(pv.ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	return tasks
}
