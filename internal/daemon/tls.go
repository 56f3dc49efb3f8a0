package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

// TLS says whether the listeners serve HTTPS.
func (c *Config) TLS() bool { return c.TLSCert != "" && c.TLSKey != "" }

func (c *Config) validateTLS() []error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return []error{errors.New("--tls-cert and --tls-key go together: give both or neither")}
	}
	if !c.TLS() {
		return nil
	}
	if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
		return []error{fmt.Errorf("--tls-cert %s / --tls-key %s: %w", c.TLSCert, c.TLSKey, err)}
	}
	return nil
}

// certReloader serves the certificate in its files and reads them again on
// SIGHUP, so a renewed certificate (certbot, an ACME client, a rotated
// secret) is picked up without a restart, which would cut every open stream.
// A reload that fails keeps the certificate in use.
type certReloader struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) reload() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("loading TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert.Store(&cert)
	return nil
}

// config is the listeners' TLS configuration. HTTP/1.1 only: terminals,
// the preview proxy's WebSockets and the agent-bound streams take over
// the connection, which HTTP/2 does not allow.
func (r *certReloader) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.cert.Load(), nil
		},
	}
}

// watchSIGHUP reloads what SIGHUP reloads (the TLS certificate, when r is
// not nil) until ctx ends. It also keeps SIGHUP from ending the daemon, the
// signal's default action.
func watchSIGHUP(ctx context.Context, r *certReloader, log *slog.Logger) error {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
			if r == nil {
				log.Info("SIGHUP: nothing to reload (no --tls-cert)")
				continue
			}
			if err := r.reload(); err != nil {
				log.Error("SIGHUP: keeping the TLS certificate in use", "err", err)
				continue
			}
			log.Info("SIGHUP: reloaded the TLS certificate", "cert", r.certFile)
		}
	}
}
