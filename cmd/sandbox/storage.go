package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/bytesize"
)

// parseBucketURL splits s3://BUCKET[/PREFIX].
func parseBucketURL(cmd *cobra.Command, raw string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(raw, "s3://")
	bucket, prefix, _ = strings.Cut(rest, "/")
	if !ok || bucket == "" {
		return "", "", &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("%q: want s3://BUCKET[/PREFIX]", raw)}
	}
	return bucket, strings.Trim(prefix, "/"), nil
}

func newMountCommand(g *globals) *cobra.Command {
	var opts client.MountOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "mount ID s3://BUCKET[/PREFIX] /PATH --endpoint URL [--region R] [--read-only] [--credentials NAME] [--json]",
		Short: "Mount an S3-compatible bucket into a running sandbox",
		Long: `Mount BUCKET (or the keys below PREFIX) at /PATH in the sandbox ID, without
restarting it. The daemon mounts the bucket on the host with s3fs; the
credentials stay there and never enter the sandbox.

Credentials come from this shell's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
and optional AWS_SESSION_TOKEN, or from the daemon's secret NAME with
--credentials NAME (see 'sandbox secret set'). The mount comes back after the
sandbox sleeps, restarts or the host reboots, until 'sandbox unmount'.`,
		Example: `  export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
  sandbox mount demo s3://datasets/2024 /data --endpoint https://s3.eu-west-1.amazonaws.com --region eu-west-1 --read-only
  sandbox mount demo s3://scratch /scratch --endpoint https://ACCOUNT.r2.cloudflarestorage.com --region auto --credentials r2`,
		Args: exactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			bucket, prefix, err := parseBucketURL(cmd, args[1])
			if err != nil {
				return err
			}
			if opts.Endpoint == "" {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--endpoint URL is required")}
			}
			opts.Prefix = prefix
			if opts.Secret == "" {
				id, key := g.e.getenv("AWS_ACCESS_KEY_ID"), g.e.getenv("AWS_SECRET_ACCESS_KEY")
				if id == "" || key == "" {
					return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a secret with --credentials")}
				}
				opts.Credentials = &api.BucketCredentials{AccessKeyID: id, SecretAccessKey: key, SessionToken: g.e.getenv("AWS_SESSION_TOKEN")}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			m, err := c.Sandbox(args[0]).MountBucket(cmd.Context(), bucket, args[2], opts)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.e.stdout, m)
			}
			_, err = fmt.Fprintf(g.e.stdout, "mounted %s at %s\n", args[1], m.Path)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Endpoint, "endpoint", "", "the S3 endpoint's URL (required)")
	fl.StringVar(&opts.Region, "region", "", "the region requests are signed for (default us-east-1)")
	fl.BoolVar(&opts.ReadOnly, "read-only", false, "mount read-only (writes fail with EROFS)")
	fl.StringVar(&opts.Secret, "credentials", "", "take the credentials from the daemon's secret NAME")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newUnmountCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "unmount ID /PATH",
		Short: "Unmount a bucket from a sandbox",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.Sandbox(args[0]).UnmountBucket(cmd.Context(), args[1])
		},
	}
}

func newMountsCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "mounts ID [--json]",
		Short: "List a sandbox's bucket mounts",
		Long: `List the bucket mounts of the sandbox ID: PATH, SOURCE, MODE (rw or ro) and
STATUS (mounted; idle while the sandbox is not running; broken, with the
reason, when its FUSE client died and could not be restarted). With --json,
print the API's answer, {"mounts": [...]}.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			mounts, err := c.Sandbox(args[0]).Mounts(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if mounts == nil {
					mounts = []api.Mount{}
				}
				return printJSON(g.e.stdout, api.MountList{Mounts: mounts})
			}
			t := newTable("PATH\tSOURCE\tMODE\tSTATUS")
			for _, m := range mounts {
				src := "s3://" + m.Bucket
				if m.Prefix != "" {
					src += "/" + m.Prefix
				}
				mode := "rw"
				if m.ReadOnly {
					mode = "ro"
				}
				status := m.Status
				if m.Reason != "" {
					status += ": " + m.Reason
				}
				t.row("%s\t%s\t%s\t%s", oneLine(m.Path), src, mode, oneLine(status))
			}
			return t.write(g.e.stdout)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newSecretCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Manage the daemon's named secrets (credentials for bucket mounts)",
		Long: `Secrets are small sets of variables kept by the daemon (0600, in its state
directory) and referred to by name, e.g. 'sandbox mount --credentials NAME'.
Their values are sent once and never returned.`,
	}
	var fromEnv string
	set := &cobra.Command{
		Use:     "set NAME --from-env A,B",
		Short:   "Create or replace a secret from variables of this shell's environment",
		Example: `  sandbox secret set r2 --from-env AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			values := map[string]string{}
			for _, k := range strings.Split(fromEnv, ",") {
				if k = strings.TrimSpace(k); k == "" {
					continue
				}
				v := g.e.getenv(k)
				if v == "" {
					return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("%s is not set in this environment", k)}
				}
				values[k] = v
			}
			if len(values) == 0 {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--from-env names no variables")}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.SetSecret(cmd.Context(), args[0], values)
		},
	}
	set.Flags().StringVar(&fromEnv, "from-env", "", "comma-separated names of environment variables to store (required)")
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls [--json]",
		Short: "List secrets (names only, never values)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			secrets, err := c.Secrets(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if secrets == nil {
					secrets = []api.Secret{}
				}
				return printJSON(g.e.stdout, api.SecretList{Secrets: secrets})
			}
			t := newTable("NAME\tVARIABLES")
			for _, s := range secrets {
				t.row("%s\t%s", s.Name, strings.Join(s.Keys, ","))
			}
			return t.write(g.e.stdout)
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a secret (mounts made with it keep working)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.RemoveSecret(cmd.Context(), args[0])
		},
	}
	cmd.AddCommand(set, ls, rm)
	return cmd
}

// parseVolumeFlag reads --volume NAME:/PATH[:ro].
func parseVolumeFlag(s string) (api.VolumeMount, error) {
	name, rest, ok := strings.Cut(s, ":")
	if !ok || name == "" || rest == "" {
		return api.VolumeMount{}, fmt.Errorf("--volume %q: want NAME:/PATH[:ro]", s)
	}
	vm := api.VolumeMount{Name: name, Path: rest}
	if p, mode, ok := strings.Cut(rest, ":"); ok {
		if mode != "ro" && mode != "rw" {
			return api.VolumeMount{}, fmt.Errorf("--volume %q: the mode after the path is ro or rw", s)
		}
		vm.Path, vm.ReadOnly = p, mode == "ro"
	}
	return vm, nil
}

func newVolumeCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Manage named volumes (persistent directories shared by sandboxes)",
		Long: `A volume is a persistent directory on the daemon's host with a quota of its
own, that outlives sandboxes and can be mounted into several at once:
'sandbox create --volume NAME:/PATH[:ro] ID'.`,
	}
	var size string
	create := &cobra.Command{
		Use:     "create NAME [--size 10Gi]",
		Short:   "Create a volume",
		Example: `  sandbox volume create cache --size 2Gi`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var n int64
			if size != "" {
				var err error
				if n, err = bytesize.Parse(size); err != nil {
					return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--size %q: want a size such as 10Gi", size)}
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			_, err = c.CreateVolume(cmd.Context(), args[0], n)
			return err
		},
	}
	create.Flags().StringVar(&size, "size", "", "the volume's quota, e.g. 10Gi (default 10Gi)")
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls [--json]",
		Short: "List volumes",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			vols, err := c.Volumes(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if vols == nil {
					vols = []api.Volume{}
				}
				return printJSON(g.e.stdout, api.VolumeList{Volumes: vols})
			}
			t := newTable("NAME\tSIZE\tUSED\tSANDBOXES")
			for _, v := range vols {
				users := strings.Join(v.Sandboxes, ",")
				if users == "" {
					users = "-"
				}
				t.row("%s\t%s\t%s\t%s", v.Name, bytesize.Format(v.SizeBytes), bytesize.Format(v.UsedBytes), users)
			}
			return t.write(g.e.stdout)
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a volume and its files (VOLUME_IN_USE while a sandbox uses it)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.RemoveVolume(cmd.Context(), args[0])
		},
	}
	cmd.AddCommand(create, ls, rm)
	return cmd
}
