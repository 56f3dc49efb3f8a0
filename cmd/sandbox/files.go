package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

// remotePath is one side of sandbox cp: ID:PATH in a sandbox, or a local
// path ("-" for stdin or stdout).
type remotePath struct {
	id, path string
	remote   bool
}

// parseCopyArg reads ID:PATH. Like docker cp, a local path with a colon
// must start with "/" or "." (./a:b).
func parseCopyArg(s string) remotePath {
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") || s == "-" {
		return remotePath{path: s}
	}
	id, p, ok := strings.Cut(s, ":")
	if !ok || api.ValidateSandboxID(id) != nil {
		return remotePath{path: s}
	}
	if p == "" {
		p = "."
	}
	return remotePath{id: id, path: p, remote: true}
}

type copyFlags struct {
	recursive bool
	session   string
	mode      string
}

func newCopyCommand(g *globals) *cobra.Command {
	var f copyFlags
	cmd := &cobra.Command{
		Use:   "cp [-r] SRC DST",
		Short: "Copy files between this machine and a sandbox",
		Long: `Copy a file, or with -r a directory, between this machine and a sandbox.
One side is ID:PATH, a path in the sandbox ID (relative paths resolve against
the session's working directory); the other is a local path, or - for
stdin or stdout. A local path with a colon must start with / or . (./a:b).

Files stream both ways with no size limit. Directories travel as a tar
stream that keeps modes, owners, times and symlinks; with -, the tar stream
itself is read from stdin or written to stdout.

When DST is an existing directory, SRC is copied into it under its own name.`,
		Example: `  sandbox cp data.csv demo:/workspace/
  sandbox cp demo:/workspace/out.png ./out.png
  sandbox cp -r ./project demo:/workspace/project
  sandbox cp -r demo:/workspace - > workspace.tar
  echo hi | sandbox cp - demo:/tmp/hi.txt`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCopy(cmd.Context(), g, f, parseCopyArg(args[0]), parseCopyArg(args[1]))
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&f.recursive, "recursive", "r", false, "copy a directory (as a tar stream)")
	fl.StringVar(&f.session, "session", "", "resolve relative sandbox paths in this session")
	fl.StringVar(&f.mode, "mode", "", "mode of the file written in the sandbox, in octal (default 0644, or the existing file's)")
	return cmd
}

func fileOpts(session string) []client.FileOption {
	if session == "" {
		return nil
	}
	return []client.FileOption{client.InSession(session)}
}

func runCopy(ctx context.Context, g *globals, f copyFlags, src, dst remotePath) error {
	usage := func(format string, a ...any) error {
		return &usageError{cmd: "sandbox cp", err: fmt.Errorf(format, a...)}
	}
	switch {
	case src.remote == dst.remote && src.remote:
		return usage("copy between sandboxes goes through this machine: cp ID:PATH - | cp - ID2:PATH")
	case !src.remote && !dst.remote:
		return usage("one side must be ID:PATH")
	}
	opts := fileOpts(f.session)
	if f.mode != "" {
		v, err := strconv.ParseUint(f.mode, 8, 32)
		if err != nil || v > 0o7777 {
			return usage("--mode %q is not an octal mode", f.mode)
		}
		m := fs.FileMode(v & 0o777)
		for bit, flag := range map[uint64]fs.FileMode{0o4000: fs.ModeSetuid, 0o2000: fs.ModeSetgid, 0o1000: fs.ModeSticky} {
			if v&bit != 0 {
				m |= flag
			}
		}
		opts = append(opts, client.WithMode(m))
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	if src.remote {
		return download(ctx, g, c.Sandbox(src.id), f, src.path, dst.path, opts)
	}
	return upload(ctx, g, c.Sandbox(dst.id), f, src.path, dst.path, opts)
}

// remoteDir reports whether p is a directory in the sandbox (symlinks
// followed); false when it does not exist.
func remoteDir(ctx context.Context, sb *client.Sandbox, p string, opts []client.FileOption) (bool, error) {
	st, err := sb.Stat(ctx, p, opts...)
	if errors.Is(err, client.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if st.Type == api.FileTypeSymlink {
		ok, err := sb.Exists(ctx, p+"/.", opts...)
		return ok && err == nil, nil
	}
	return st.Type == api.FileTypeDirectory, nil
}

func upload(ctx context.Context, g *globals, sb *client.Sandbox, f copyFlags, src, dst string, opts []client.FileOption) error {
	var in io.Reader
	isDir := false
	if src == "-" {
		in = g.e.stdin
	} else {
		fi, err := os.Stat(src)
		if err != nil {
			return err
		}
		isDir = fi.IsDir()
		if isDir && !f.recursive {
			return &usageError{cmd: "sandbox cp", err: fmt.Errorf("%s is a directory; use -r", src)}
		}
	}
	into, err := remoteDir(ctx, sb, dst, opts)
	if err != nil {
		return err
	}
	if into && src != "-" {
		dst = path.Join(dst, filepath.Base(filepath.Clean(src)))
	}
	if f.recursive {
		if src != "-" {
			if !isDir {
				return &usageError{cmd: "sandbox cp", err: fmt.Errorf("%s is not a directory", src)}
			}
			pr, pw := io.Pipe()
			go func() { pw.CloseWithError(writeTar(src, pw)) }()
			defer pr.Close()
			in = pr
		}
		_, err := sb.ImportTar(ctx, dst, in, opts...)
		return err
	}
	if src != "-" {
		file, err := os.Open(src)
		if err != nil {
			return err
		}
		defer file.Close()
		in = file
	} else if into {
		return &usageError{cmd: "sandbox cp", err: fmt.Errorf("%s is a directory; name the file to write from stdin", dst)}
	}
	_, err = sb.Upload(ctx, dst, in, append(opts, client.CreateParents())...)
	return err
}

func download(ctx context.Context, g *globals, sb *client.Sandbox, f copyFlags, src, dst string, opts []client.FileOption) error {
	isDir, err := remoteDir(ctx, sb, src, opts)
	if err != nil {
		return err
	}
	if isDir && !f.recursive {
		return &usageError{cmd: "sandbox cp", err: fmt.Errorf("%s is a directory; use -r", src)}
	}
	if dst != "-" {
		if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
			dst = filepath.Join(dst, path.Base(src))
		}
	}
	if f.recursive {
		if !isDir {
			return &usageError{cmd: "sandbox cp", err: fmt.Errorf("%s is not a directory", src)}
		}
		rc, err := sb.ExportTar(ctx, src, opts...)
		if err != nil {
			return err
		}
		defer rc.Close()
		if dst == "-" {
			_, err = io.Copy(g.e.stdout, rc)
			return err
		}
		return extractTar(rc, dst)
	}
	r, err := sb.OpenFile(ctx, src, opts...)
	if err != nil {
		return err
	}
	defer r.Close()
	if dst == "-" {
		_, err = io.Copy(g.e.stdout, r)
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		os.Remove(dst)
		return fmt.Errorf("downloading %s: %w", src, err)
	}
	return out.Close()
}

// writeTar writes the tree below dir to w as a tar stream.
func writeTar(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
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
		}
		if fi.Mode()&(fs.ModeSocket|fs.ModeDevice|fs.ModeNamedPipe) != 0 {
			return nil
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		file, err := os.Open(p)
		if err != nil {
			return err
		}
		defer file.Close()
		_, err = io.CopyN(tw, file, hdr.Size)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// extractTar unpacks r into dir (made if missing). Nothing lands outside
// dir: os.Root refuses names and symlinks that would leave it.
func extractTar(r io.Reader, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	type dirTime struct {
		name  string
		mtime time.Time
	}
	var dirs []dirTime
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the archive: %w", err)
		}
		name := path.Clean(strings.TrimLeft(hdr.Name, "/"))
		if name == "." || name == ".." || strings.HasPrefix(name, "../") {
			continue
		}
		if d := path.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		mode := fs.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, mode|0o700); err != nil {
				return err
			}
			dirs = append(dirs, dirTime{name, hdr.ModTime})
			continue
		case tar.TypeReg:
			root.Remove(name)
			out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			root.Chmod(name, mode)
		case tar.TypeSymlink:
			root.Remove(name)
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return err
			}
			continue
		case tar.TypeLink:
			root.Remove(name)
			if err := root.Link(path.Clean(strings.TrimLeft(hdr.Linkname, "/")), name); err != nil {
				return err
			}
		default:
			continue // FIFOs and devices stay in the sandbox
		}
		root.Chtimes(name, hdr.ModTime, hdr.ModTime)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		root.Chtimes(dirs[i].name, dirs[i].mtime, dirs[i].mtime)
	}
	return nil
}

func newFilesCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fs",
		Short: "Work with files in a sandbox: ls, cat, rm, mkdir, mv, stat, watch",
		Long: `Work with the files of a sandbox. Paths are the sandbox's; relative ones
resolve against the working directory of the session (--session, default
the default session). See also sandbox cp.`,
	}
	var session string
	cmd.PersistentFlags().StringVar(&session, "session", "", "resolve relative paths in this session")
	opts := func() []client.FileOption { return fileOpts(session) }
	cmd.AddCommand(
		newFsListCommand(g, opts),
		newFsCatCommand(g, opts),
		newFsRemoveCommand(g, opts),
		newFsMkdirCommand(g, opts),
		newFsMoveCommand(g, opts),
		newFsStatCommand(g, opts),
		newFsWatchCommand(g, opts),
	)
	return cmd
}

func newFsListCommand(g *globals, opts func() []client.FileOption) *cobra.Command {
	var recursive, all, asJSON bool
	cmd := &cobra.Command{
		Use:   "ls [-R] [-a] [--json] ID [PATH]",
		Short: "List a directory",
		Long: `List a directory of the sandbox (default: the session's working directory):
MODE, SIZE, MODIFIED and NAME, with -> and the target for symlinks. -R lists
the whole tree, -a includes names that start with a dot. --json prints the
API's answer.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("want ID [PATH], got %d argument(s)", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			p := "."
			if len(args) == 2 {
				p = args[1]
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			o := opts()
			if recursive {
				o = append(o, client.Recursive())
			}
			if all {
				o = append(o, client.IncludeHidden())
			}
			res, err := c.Sandbox(args[0]).ListFiles(cmd.Context(), p, o...)
			if err != nil {
				return err
			}
			if asJSON {
				if res.Files == nil {
					res.Files = []api.FileEntry{}
				}
				return printJSON(g.e.stdout, res)
			}
			var buf bytes.Buffer
			tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
			for _, e := range res.Files {
				name := e.Name
				if recursive {
					name = e.RelativePath
				}
				if e.Type == api.FileTypeSymlink {
					name += " -> " + e.Target
				}
				fmt.Fprintf(tw, "%s%s\t%d\t %s\t %s\t\n", typeLetter(e.Type), e.Mode, e.Size, e.ModifiedAt.Local().Format("2006-01-02 15:04"), oneLine(name))
			}
			tw.Flush()
			for line := range strings.Lines(buf.String()) {
				fmt.Fprintln(g.e.stdout, strings.TrimRight(strings.TrimLeft(line, " "), " \n"))
			}
			if res.Truncated {
				fmt.Fprintf(g.e.stderr, "sandbox: the listing stops at %d entries\n", res.Count)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "R", false, "list the whole tree")
	cmd.Flags().BoolVarP(&all, "all", "a", false, "include names starting with a dot")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func typeLetter(t string) string {
	switch t {
	case api.FileTypeDirectory:
		return "d"
	case api.FileTypeSymlink:
		return "l"
	case api.FileTypeOther:
		return "?"
	}
	return "-"
}

func newFsCatCommand(g *globals, opts func() []client.FileOption) *cobra.Command {
	return &cobra.Command{
		Use:   "cat ID PATH...",
		Short: "Print files",
		Long:  `Print the files to stdout, streamed, as they are (binary included).`,
		Args:  minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			sb := c.Sandbox(args[0])
			for _, p := range args[1:] {
				if _, err := sb.Download(cmd.Context(), p, g.e.stdout, opts()...); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func newFsRemoveCommand(g *globals, opts func() []client.FileOption) *cobra.Command {
	var recursive, force bool
	cmd := &cobra.Command{
		Use:   "rm [-r] [-f] ID PATH...",
		Short: "Delete files and directories",
		Long: `Delete each PATH. A directory needs -r, which deletes everything in it. A
missing PATH is an error unless -f is given.`,
		Args: minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			sb := c.Sandbox(args[0])
			o := opts()
			if recursive {
				o = append(o, client.Recursive())
			}
			for _, p := range args[1:] {
				err := sb.DeleteFile(cmd.Context(), p, o...)
				if err != nil && !(force && errors.Is(err, client.ErrNotFound)) {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "delete directories and their content")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "ignore missing paths")
	return cmd
}

func newFsMkdirCommand(g *globals, opts func() []client.FileOption) *cobra.Command {
	var parents bool
	var mode string
	cmd := &cobra.Command{
		Use:   "mkdir [-p] [--mode M] ID PATH...",
		Short: "Make directories",
		Long:  `Make each directory. -p makes missing parents and accepts existing directories.`,
		Args:  minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := opts()
			if parents {
				o = append(o, client.Recursive())
			}
			if mode != "" {
				v, err := strconv.ParseUint(mode, 8, 32)
				if err != nil || v > 0o777 {
					return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--mode %q is not an octal mode", mode)}
				}
				o = append(o, client.WithMode(fs.FileMode(v)))
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			sb := c.Sandbox(args[0])
			for _, p := range args[1:] {
				if err := sb.Mkdir(cmd.Context(), p, o...); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&parents, "parents", "p", false, "make missing parents; no error if the directory exists")
	cmd.Flags().StringVar(&mode, "mode", "", "mode in octal (default 0755)")
	return cmd
}

func newFsMoveCommand(g *globals, opts func() []client.FileOption) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "mv [-f] ID SRC DST",
		Short: "Move or rename a file or directory",
		Long: `Move SRC to DST, like mv: into DST when DST is a directory. An existing
DST file is an error (FILE_EXISTS) unless -f is given. Prints where SRC
ended up.`,
		Args: exactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			o := opts()
			if force {
				o = append(o, client.Overwrite())
			}
			to, err := c.Sandbox(args[0]).MoveFile(cmd.Context(), args[1], args[2], o...)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.e.stdout, oneLine(to))
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "replace an existing destination")
	return cmd
}

func newFsStatCommand(g *globals, opts func() []client.FileOption) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stat [--json] ID PATH",
		Short: "Describe a file",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.Sandbox(args[0]).Stat(cmd.Context(), args[1], opts()...)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.e.stdout, st)
			}
			w := g.e.stdout
			fmt.Fprintf(w, "path:      %s\n", oneLine(st.AbsolutePath))
			fmt.Fprintf(w, "type:      %s\n", st.Type)
			if st.Target != "" {
				fmt.Fprintf(w, "target:    %s\n", oneLine(st.Target))
			}
			fmt.Fprintf(w, "size:      %d\n", st.Size)
			fmt.Fprintf(w, "mode:      %s (%s)\n", st.Mode, st.OctalMode)
			fmt.Fprintf(w, "owner:     %d:%d\n", st.UID, st.GID)
			fmt.Fprintf(w, "modified:  %s\n", st.ModifiedAt.Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newFsWatchCommand(g *globals, opts func() []client.FileOption) *cobra.Command {
	var recursive, asJSON bool
	var include, exclude []string
	cmd := &cobra.Command{
		Use:   "watch [-r] [--include GLOB]... [--exclude GLOB]... [--json] ID PATH",
		Short: "Print changes to files as they happen",
		Long: `Watch PATH and print one line per change, "EVENT PATH" (EVENT is create,
modify, delete, move_from, move_to or attrib; directories end with /), until
Ctrl-C. The first line, "watching PATH", goes to stderr once the watch is in
place. -r watches the whole tree. --json prints each event as a JSON line.`,
		Example: `  sandbox fs watch -r --exclude node_modules --exclude '*.log' demo /workspace`,
		Args:    exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			o := opts()
			if recursive {
				o = append(o, client.Recursive())
			}
			if len(include) > 0 {
				o = append(o, client.Include(include...))
			}
			if len(exclude) > 0 {
				o = append(o, client.Exclude(exclude...))
			}
			w, err := c.Sandbox(args[0]).Watch(cmd.Context(), args[1], o...)
			if err != nil {
				return err
			}
			defer w.Close()
			fmt.Fprintf(g.e.stderr, "watching %s\n", oneLine(w.Path))
			for ev, err := range w.Events() {
				if err != nil {
					return err
				}
				if asJSON {
					if err := encodeJSON(g.e.stdout, ev, ""); err != nil {
						return err
					}
					continue
				}
				p := ev.Path
				if ev.IsDirectory {
					p += "/"
				}
				if _, err := fmt.Fprintf(g.e.stdout, "%s %s\n", ev.EventType, oneLine(p)); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "watch the whole tree")
	cmd.Flags().StringArrayVar(&include, "include", nil, "report only paths matching this glob (repeatable)")
	cmd.Flags().StringArrayVar(&exclude, "exclude", nil, "ignore paths matching this glob (repeatable)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON lines")
	return cmd
}
