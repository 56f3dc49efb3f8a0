package main

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/bytesize"
)

func newImageCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage the daemon's images: ls, inspect, rm, import, pull, build, build-base",
		Long: `Images are what sandboxes' root file systems are made of: "host" (built in:
the host's /usr, read-only), "base" (Debian 12 with Python, Node.js and the usual
tools; make it with build-base), or any OCI image you import, pull or build.
Choose one at creation: sandbox create --image NAME ID.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(
		newImageListCommand(g), newImageInspectCommand(g), newImageRemoveCommand(g),
		newImageImportCommand(g), newImagePullCommand(g), newImageBuildCommand(g), newImageBuildBaseCommand(g),
	)
	return cmd
}

func newImageListCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls [--json]",
		Aliases: []string{"list"},
		Short:   "List images",
		Long: `List the daemon's images as a table: NAME, DIGEST (short), SIZE (unpacked),
SOURCE and CREATED. An image with several names has a line per name; one kept only
for the sandboxes created from it before its name moved on shows as <none>.
With --json, print the API's answer, {"images": [...]}.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			imgs, err := c.ListImages(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if imgs == nil {
					imgs = []api.Image{}
				}
				return printJSON(g.e.stdout, api.ImageList{Images: imgs})
			}
			now := g.e.now()
			// Through a cluster's gateway each image names its nodes.
			cluster := slices.ContainsFunc(imgs, func(img api.Image) bool { return len(img.Nodes) > 0 })
			header := "NAME\tDIGEST\tSIZE\tSOURCE\tCREATED"
			if cluster {
				header += "\tNODES"
			}
			t := newTable(header)
			for _, img := range imgs {
				names := img.Names
				if len(names) == 0 {
					names = []string{"<none>"}
				}
				created := "-"
				if img.Created != nil {
					created = ago(now, *img.Created)
				}
				for _, n := range names {
					row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s", n, shortDigest(img.Digest), formatSize(img.Size, img.Source), img.Source, created)
					if cluster {
						row += "\t" + strings.Join(img.Nodes, ",")
					}
					t.row("%s", row)
				}
			}
			return t.write(g.e.stdout)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if d == "" {
		return "-"
	}
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

func formatSize(n int64, source string) string {
	if source == "host" {
		return "-"
	}
	return bytesize.Format(n)
}

func newImageInspectCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Print an image's description as JSON (config, layers, sizes)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			img, err := c.Image(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(g.e.stdout, img)
		},
	}
}

func newImageRemoveCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove images (refused while a sandbox uses one)",
		Long: `Remove each image name. An image that a sandbox was created from cannot be
removed (IMAGE_IN_USE) until those sandboxes are destroyed. Layers no image needs
any more are deleted.`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			failed := false
			for _, name := range args {
				if err := c.RemoveImage(cmd.Context(), name); err != nil {
					fmt.Fprintf(g.e.stderr, "sandbox: image %s: %s\n", name, message(err))
					failed = true
					continue
				}
				fmt.Fprintln(g.e.stdout, name)
			}
			if failed {
				return reportedError{}
			}
			return nil
		},
	}
}

func newImageImportCommand(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "import [--name NAME] FILE",
		Short: "Import a docker save tarball or an OCI image layout (directory or tar)",
		Long: `Upload an image to the daemon's store: FILE is a tarball made by "docker save"
(or podman save), an OCI image layout packed as a tar, or an OCI image layout
directory (packed on the fly). The image is named NAME, else the name the archive
gives it. Prints the image's name and digest.`,
		Example: `  docker save python:3.12-slim > py.tar && sandbox image import py.tar
  sandbox image import --name tools ./oci-layout-dir`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			body, size, err := openArchive(args[0])
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			defer body.Close()
			if size > 0 {
				fmt.Fprintf(g.e.stderr, "uploading %s (%s)\n", args[0], bytesize.Format(size))
			}
			img, err := c.ImportImage(cmd.Context(), body, name)
			if err != nil {
				return err
			}
			return printImageName(g, img)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name to store the image under (default: the archive's)")
	return cmd
}

// openArchive opens path for upload: a file as it is, a directory (an OCI
// layout) packed into a tar as it is read.
func openArchive(path string) (io.ReadCloser, int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, 0, err
	}
	if !fi.IsDir() {
		f, err := os.Open(path)
		return f, fi.Size(), err
	}
	if _, err := os.Stat(filepath.Join(path, "index.json")); err != nil {
		return nil, 0, fmt.Errorf("%s is a directory but not an OCI image layout (no index.json)", path)
	}
	return tarDirectory(path, nil), 0, nil
}

// tarDirectory packs dir into a tar stream (regular files, directories and
// symlinks, relative names), skipping paths for which skip says so.
func tarDirectory(dir string, skip func(rel string, isDir bool) bool) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil || rel == "." {
				return err
			}
			rel = filepath.ToSlash(rel)
			if skip != nil && skip(rel, d.IsDir()) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			link := ""
			if fi.Mode()&fs.ModeSymlink != 0 {
				if link, err = os.Readlink(p); err != nil {
					return err
				}
			} else if !fi.Mode().IsRegular() && !fi.IsDir() {
				return nil // sockets, devices: not part of a context
			}
			hdr, err := tar.FileInfoHeader(fi, link)
			if err != nil {
				return err
			}
			hdr.Name = rel
			hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if fi.Mode().IsRegular() {
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				_, err = io.Copy(tw, f)
				f.Close()
				return err
			}
			return nil
		})
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

func newImagePullCommand(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "pull [--name NAME] REF",
		Short: "Pull an image from a registry into the daemon's store",
		Long: `The daemon pulls REF (for linux and its own architecture) with the registry
credentials of its docker config file (sandboxd --registry-auth) and stores it
under NAME, else REF as given.`,
		Example: `  sandbox image pull registry.example.com/team/app:v1
  sandbox image pull --name py docker.io/library/python:3.12-slim`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			img, err := c.PullImage(cmd.Context(), args[0], name)
			if err != nil {
				return err
			}
			return printImageName(g, img)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name to store the image under (default: REF)")
	return cmd
}

func newImageBuildCommand(g *globals) *cobra.Command {
	var opts client.BuildOptions
	var args []string
	cmd := &cobra.Command{
		Use:   "build -t NAME [-f Dockerfile] [--build-arg K=V] DIR",
		Short: "Build a Dockerfile on the daemon (buildah) and store the result",
		Long: `Pack DIR (the build context; paths listed in DIR/.dockerignore are left out)
and build its Dockerfile on the daemon. FROM names an image of the store (base, an
imported or built one) or, when its registry is reachable, a registry image, which
is pulled into the store first: builds from local images work offline. RUN steps
have no network. The build's output streams to stderr; the image's name and digest
go to stdout.`,
		Example: `  sandbox image build -t ml ./ml-image      # FROM base / RUN pip install ...
  sandbox create --image ml notebook`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if opts.Name == "" {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("-t NAME is required")}
			}
			buildArgs, err := parseEnv(args, g.e.getenv)
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--build-arg: %w", err)}
			}
			opts.Args = buildArgs
			dir := pos[0]
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("%s is not a directory", dir)}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ignore := readDockerignore(dir)
			body := tarDirectory(dir, ignore)
			defer body.Close()
			opts.OnLog = func(_, line string) { fmt.Fprintln(g.e.stderr, line) }
			img, err := c.BuildImage(cmd.Context(), body, opts)
			if err != nil {
				return err
			}
			return printImageName(g, img)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&opts.Name, "tag", "t", "", "`NAME` to store the image under (required)")
	fl.StringVarP(&opts.Dockerfile, "file", "f", "", "Dockerfile path inside DIR (default Dockerfile)")
	fl.StringArrayVar(&args, "build-arg", nil, "build argument `K=V`, or K to pass on the local value (repeatable)")
	return cmd
}

// readDockerignore returns a filter for the simple patterns of
// DIR/.dockerignore: exact paths, directory prefixes and shell globs
// matched against whole paths (no "!" exceptions, no "**").
func readDockerignore(dir string) func(string, bool) bool {
	data, err := os.ReadFile(filepath.Join(dir, ".dockerignore"))
	if err != nil {
		return nil
	}
	var patterns []string
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "!") {
			continue
		}
		patterns = append(patterns, strings.Trim(filepath.ToSlash(filepath.Clean(line)), "/"))
	}
	return func(rel string, _ bool) bool {
		for _, p := range patterns {
			if ok, _ := filepath.Match(p, rel); ok || rel == p || strings.HasPrefix(rel, p+"/") {
				return true
			}
		}
		return false
	}
}

func newImageBuildBaseCommand(g *globals) *cobra.Command {
	var rebuild bool
	cmd := &cobra.Command{
		Use:   "build-base [--rebuild]",
		Short: `Build the "base" image: Debian 12 with Python, Node.js, git and the usual tools`,
		Long: `Build the base image on the daemon from the recipe in sandboxd's images/base
(mmdebstrap, from Debian's packages; a few minutes and a few hundred MB of
downloads the first time) and store it as "base". The recipe's result is cached on
the daemon's host (sandboxd --image-cache-dir), so later runs only import it;
--rebuild ignores the cache. The build's output streams to stderr.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			img, err := c.BuildBaseImage(cmd.Context(), rebuild, func(_, line string) { fmt.Fprintln(g.e.stderr, line) })
			if err != nil {
				return err
			}
			return printImageName(g, img)
		},
	}
	cmd.Flags().BoolVar(&rebuild, "rebuild", false, "ignore the cached build of the recipe")
	return cmd
}

func printImageName(g *globals, img *api.Image) error {
	name := "<none>"
	if len(img.Names) > 0 {
		name = img.Names[0]
	}
	_, err := fmt.Fprintf(g.e.stdout, "%s %s (%s)\n", name, img.Digest, bytesize.Format(img.Size))
	return err
}
