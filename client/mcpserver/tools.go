package mcpserver

import (
	"fmt"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/api"
)

// The tools' arguments. Names are the contract of docs/mcp.md: snake_case,
// the sandbox always as "sandbox". Fields without omitempty are required;
// every struct refuses unknown arguments. The schemas add the bounds
// (patterns, ranges, lengths) in schemas below.

type sandboxArgs struct {
	Sandbox string `json:"sandbox" jsonschema:"the sandbox's ID: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'"`
}

type createArgs struct {
	Sandbox string            `json:"sandbox" jsonschema:"the sandbox's ID: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'"`
	Image   string            `json:"image,omitempty" jsonschema:"root filesystem image, e.g. base; default: the daemon's default image"`
	Env     map[string]string `json:"env,omitempty" jsonschema:"environment variables of every command in the sandbox"`
	Labels  map[string]string `json:"labels,omitempty" jsonschema:"free-form labels for bookkeeping"`
	Network string            `json:"network,omitempty" jsonschema:"internet (outbound access) or none (loopback only); default: the daemon's default"`
}

type listArgs struct{}

type execArgs struct {
	Sandbox        string            `json:"sandbox" jsonschema:"the sandbox's ID"`
	Command        string            `json:"command" jsonschema:"one bash command line; cd and export persist to later calls"`
	Cwd            string            `json:"cwd,omitempty" jsonschema:"working directory for this command only"`
	Env            map[string]string `json:"env,omitempty" jsonschema:"environment variables for this command only"`
	TimeoutSeconds int               `json:"timeout_seconds,omitempty" jsonschema:"kill the command after this many seconds (default 300)"`
}

type writeFileArgs struct {
	Sandbox  string `json:"sandbox" jsonschema:"the sandbox's ID"`
	Path     string `json:"path" jsonschema:"file path; relative to the shell's working directory; missing parent directories are created"`
	Content  string `json:"content" jsonschema:"the file's new content"`
	Encoding string `json:"encoding,omitempty" jsonschema:"utf-8 (default) or base64 for binary content"`
}

type readFileArgs struct {
	Sandbox string `json:"sandbox" jsonschema:"the sandbox's ID"`
	Path    string `json:"path" jsonschema:"file path; relative to the shell's working directory"`
	Offset  int64  `json:"offset,omitempty" jsonschema:"first byte to read (default 0)"`
	Length  int64  `json:"length,omitempty" jsonschema:"bytes to read (default and maximum: the server's output bound)"`
}

type listFilesArgs struct {
	Sandbox       string `json:"sandbox" jsonschema:"the sandbox's ID"`
	Path          string `json:"path" jsonschema:"directory to list; relative to the shell's working directory"`
	Recursive     bool   `json:"recursive,omitempty" jsonschema:"list subdirectories too"`
	IncludeHidden bool   `json:"include_hidden,omitempty" jsonschema:"include names starting with a dot"`
}

type runCodeArgs struct {
	Sandbox        string `json:"sandbox" jsonschema:"the sandbox's ID"`
	Code           string `json:"code" jsonschema:"the code to run; variables and imports persist between runs of the same language"`
	Language       string `json:"language,omitempty" jsonschema:"python (default), javascript or typescript"`
	TimeoutSeconds int    `json:"timeout_seconds,omitempty" jsonschema:"interrupt the run after this many seconds (default 60)"`
}

type startProcessArgs struct {
	Sandbox   string            `json:"sandbox" jsonschema:"the sandbox's ID"`
	Command   string            `json:"command" jsonschema:"one shell command line, run in the background"`
	ProcessID string            `json:"process_id,omitempty" jsonschema:"a name for the process, unique in the sandbox (default: generated)"`
	Cwd       string            `json:"cwd,omitempty" jsonschema:"working directory"`
	Env       map[string]string `json:"env,omitempty" jsonschema:"environment variables of the process"`
}

type processArgs struct {
	Sandbox   string `json:"sandbox" jsonschema:"the sandbox's ID"`
	ProcessID string `json:"process_id" jsonschema:"the process's ID, as start_process returned it"`
}

type killProcessArgs struct {
	Sandbox   string `json:"sandbox" jsonschema:"the sandbox's ID"`
	ProcessID string `json:"process_id" jsonschema:"the process's ID, as start_process returned it"`
	Signal    string `json:"signal,omitempty" jsonschema:"signal name (default SIGTERM, then SIGKILL if the process does not end)"`
}

type exposePortArgs struct {
	Sandbox string `json:"sandbox" jsonschema:"the sandbox's ID"`
	Port    int    `json:"port" jsonschema:"the port a service in the sandbox listens on (1024-65535)"`
	Name    string `json:"name,omitempty" jsonschema:"a label for people"`
}

// Schema bounds. Strings the daemon bounds itself are bounded here too,
// so a model gets the schema's message before anything is sent.
const (
	sandboxIDPattern = `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`
	processIDPattern = `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`
	maxPathLength    = 4096
	maxEnvVars       = 256
	// maxWriteChars bounds write_file's content (characters: 16 MiB of
	// text, 12 MiB of binary content as base64).
	maxWriteChars = 16 << 20
)

// schema infers the input schema of T and applies the bounds every tool
// shares (the sandbox ID, paths, env), then tweak's.
func schema[T any](tweak func(p map[string]*jsonschema.Schema)) *jsonschema.Schema {
	s, err := jsonschema.For[T](nil)
	if err != nil {
		panic(fmt.Sprintf("input schema of %T: %v", *new(T), err))
	}
	p := s.Properties
	if sb, ok := p["sandbox"]; ok {
		sb.Pattern, sb.MinLength, sb.MaxLength = sandboxIDPattern, jsonschema.Ptr(1), jsonschema.Ptr(api.MaxSandboxIDLength)
	}
	for _, name := range []string{"path", "cwd"} {
		if f, ok := p[name]; ok {
			f.MaxLength = jsonschema.Ptr(maxPathLength)
		}
	}
	if f, ok := p["path"]; ok {
		f.MinLength = jsonschema.Ptr(1)
	}
	for _, name := range []string{"env", "labels"} {
		if f, ok := p[name]; ok {
			f.MaxProperties = jsonschema.Ptr(maxEnvVars)
		}
	}
	if f, ok := p["process_id"]; ok {
		f.Pattern = processIDPattern
	}
	if tweak != nil {
		tweak(p)
	}
	return s
}

func enum(values ...string) []any {
	out := make([]any, len(values))
	for i, v := range values {
		out[i] = v
	}
	return out
}

func rangeOf(min, max float64) func(*jsonschema.Schema) {
	return func(s *jsonschema.Schema) { s.Minimum, s.Maximum = jsonschema.Ptr(min), jsonschema.Ptr(max) }
}

// hints returns tool annotations.
func hints(title string, readOnly, destructive, idempotent bool) *mcp.ToolAnnotations {
	return &mcp.ToolAnnotations{Title: title, ReadOnlyHint: readOnly, DestructiveHint: jsonschema.Ptr(destructive),
		IdempotentHint: idempotent, OpenWorldHint: jsonschema.Ptr(false)}
}

// addTools registers every tool (tools/list sorts them by name).
func (s *server) addTools(ms *mcp.Server) {
	mcp.AddTool(ms, &mcp.Tool{
		Name:        "create_sandbox",
		Description: "Create a sandbox (an isolated Linux machine) with the given ID, or return it if it exists. Optional: image, env, labels, network. Other tools create a sandbox with default settings on first use, so this is only needed for non-default settings.",
		InputSchema: schema[createArgs](func(p map[string]*jsonschema.Schema) {
			p["network"].Enum = enum("internet", "none")
			p["image"].MaxLength = jsonschema.Ptr(256)
		}),
		Annotations: hints("Create sandbox", false, false, true),
	}, s.createSandbox)
	mcp.AddTool(ms, &mcp.Tool{
		Name:        "list_sandboxes",
		Description: "List the daemon's sandboxes with their status (running, sleeping, stopped...).",
		InputSchema: schema[listArgs](nil),
		Annotations: hints("List sandboxes", true, false, true),
	}, s.listSandboxes)
	mcp.AddTool(ms, &mcp.Tool{
		Name:        "destroy_sandbox",
		Description: "Destroy a sandbox and everything in it, its files included.",
		InputSchema: schema[sandboxArgs](nil),
		Annotations: hints("Destroy sandbox", false, true, true),
	}, s.destroySandbox)
	mcp.AddTool(ms, &mcp.Tool{
		Name:        "exec",
		Description: "Run a bash command line in the sandbox and return its exit code, stdout and stderr. Shell state (cd, export, functions) persists between calls. Output is streamed as progress notifications while the command runs.",
		InputSchema: schema[execArgs](func(p map[string]*jsonschema.Schema) {
			p["command"].MinLength, p["command"].MaxLength = jsonschema.Ptr(1), jsonschema.Ptr(api.MaxCommandBytes)
			rangeOf(1, api.MaxTimeout.Seconds())(p["timeout_seconds"])
		}),
		Annotations: hints("Run a command", false, true, false),
	}, s.exec)
	mcp.AddTool(ms, &mcp.Tool{
		Name:        "write_file",
		Description: "Write a file in the sandbox, replacing its content; missing parent directories are created.",
		InputSchema: schema[writeFileArgs](func(p map[string]*jsonschema.Schema) {
			p["content"].MaxLength = jsonschema.Ptr(maxWriteChars)
			p["encoding"].Enum = enum(api.EncodingUTF8, api.EncodingBase64)
		}),
		Annotations: hints("Write a file", false, true, true),
	}, s.writeFile)
	mcp.AddTool(ms, &mcp.Tool{
		Name:        "read_file",
		Description: "Read a file of the sandbox: text as text (a part of it with offset and length), images (PNG, JPEG, GIF, WebP) as images, other binary content as base64.",
		InputSchema: schema[readFileArgs](func(p map[string]*jsonschema.Schema) {
			p["offset"].Minimum = jsonschema.Ptr(0.0)
			rangeOf(1, float64(maxImageBytes))(p["length"])
		}),
		Annotations: hints("Read a file", true, false, true),
	}, s.readFile)
	mcp.AddTool(ms, &mcp.Tool{
		Name:        "list_files",
		Description: "List a directory of the sandbox: names, types, sizes, modes.",
		InputSchema: schema[listFilesArgs](nil),
		Annotations: hints("List files", true, false, true),
	}, s.listFiles)
	mcp.AddTool(ms, &mcp.Tool{
		Name:        "run_code",
		Description: "Run Python, JavaScript or TypeScript in a persistent interpreter of the sandbox (variables persist between runs). Returns printed output, the value of the last expression, charts (matplotlib) as images and tables (pandas) as text and HTML.",
		InputSchema: schema[runCodeArgs](func(p map[string]*jsonschema.Schema) {
			p["code"].MinLength, p["code"].MaxLength = jsonschema.Ptr(1), jsonschema.Ptr(api.MaxCodeBytes)
			p["language"].Enum = enum(string(api.LanguagePython), string(api.LanguageJavaScript), string(api.LanguageTypeScript))
			rangeOf(1, api.MaxTimeout.Seconds())(p["timeout_seconds"])
		}),
		Annotations: hints("Run code", false, true, false),
	}, s.runCode)
	mcp.AddTool(ms, &mcp.Tool{
		Name:        "start_process",
		Description: "Start a long-running command (a server, a watcher) in the background; returns its process ID. Read its output with process_logs, stop it with kill_process.",
		InputSchema: schema[startProcessArgs](func(p map[string]*jsonschema.Schema) {
			p["command"].MinLength, p["command"].MaxLength = jsonschema.Ptr(1), jsonschema.Ptr(api.MaxCommandBytes)
		}),
		Annotations: hints("Start a process", false, true, false),
	}, s.startProcess)
	mcp.AddTool(ms, &mcp.Tool{
		Name:        "process_logs",
		Description: "Return a background process's status, exit code and output so far.",
		InputSchema: schema[processArgs](nil),
		Annotations: hints("Process logs", true, false, true),
	}, s.processLogs)
	mcp.AddTool(ms, &mcp.Tool{
		Name:        "kill_process",
		Description: "Stop a background process and everything it started.",
		InputSchema: schema[killProcessArgs](func(p map[string]*jsonschema.Schema) {
			p["signal"].Pattern = `^(SIG)?[A-Z0-9+-]{1,12}$`
		}),
		Annotations: hints("Kill a process", false, true, true),
	}, s.killProcess)
	mcp.AddTool(ms, &mcp.Tool{
		Name:        "expose_port",
		Description: "Make a port on which a service of the sandbox listens reachable from outside, and return its preview URL.",
		InputSchema: schema[exposePortArgs](func(p map[string]*jsonschema.Schema) {
			rangeOf(api.MinExposedPort, api.MaxExposedPort)(p["port"])
			p["name"].MaxLength = jsonschema.Ptr(api.MaxPortNameBytes)
		}),
		Annotations: hints("Expose a port", false, false, true),
	}, s.exposePort)
}
