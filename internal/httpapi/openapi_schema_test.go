package httpapi

import (
	"encoding/json"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// wireTypes names the api type behind each schema of openapi.json. A new
// schema needs its line here, so that its fields are checked.
var wireTypes = map[string]any{
	"ArchiveResult": api.ArchiveResult{}, "BuildEvent": api.BuildEvent{}, "ChangesResult": api.ChangesResult{},
	"CodeContext": api.CodeContext{}, "CodeContextList": api.CodeContextList{}, "CodeEvent": api.CodeEvent{},
	"CodeResult": api.CodeResult{}, "CreateCodeContextRequest": api.CreateCodeContextRequest{},
	"CreateSessionRequest": api.CreateSessionRequest{}, "EnvInfo": api.EnvInfo{}, "Error": api.Error{},
	"ExecRequest": api.ExecRequest{}, "ExecResult": api.ExecResult{}, "ExecutionError": api.ExecutionError{},
	"ExistsResult": api.ExistsResult{}, "ExposePortRequest": api.ExposePortRequest{}, "ExposedPort": api.ExposedPort{},
	"FileEntry": api.FileEntry{}, "FileStreamEvent": api.FileStreamEvent{}, "GitCheckoutRequest": api.GitCheckoutRequest{},
	"GitCheckoutResult": api.GitCheckoutResult{}, "Image": api.Image{}, "ImageBuildBaseRequest": api.ImageBuildBaseRequest{},
	"ImageConfig": api.ImageConfig{}, "ImageLayer": api.ImageLayer{}, "ImageList": api.ImageList{},
	"ImagePullRequest": api.ImagePullRequest{}, "KillAllResult": api.KillAllResult{}, "KillProcessRequest": api.KillProcessRequest{},
	"LifecycleEvent": api.LifecycleEvent{}, "Limits": api.Limits{}, "ListFilesRequest": api.ListFilesRequest{},
	"ListFilesResult": api.ListFilesResult{}, "PathRequest": api.PathRequest{}, "PathResult": api.PathResult{},
	"PreviewLink": api.PreviewLink{}, "PreviewLinkRequest": api.PreviewLinkRequest{}, "Process": api.Process{},
	"ProcessList": api.ProcessList{}, "ProcessLogs": api.ProcessLogs{}, "ReadFileRequest": api.ReadFileRequest{},
	"ReadFileResult": api.ReadFileResult{}, "RenameRequest": api.RenameRequest{}, "RunCodeRequest": api.RunCodeRequest{},
	"RunCodeResult": api.RunCodeResult{}, "Sandbox": api.Sandbox{}, "SandboxOptions": api.SandboxOptions{},
	"SandboxUpdate": api.SandboxUpdate{}, "Session": api.Session{}, "SessionList": api.SessionList{},
	"SetEnvRequest": api.SetEnvRequest{}, "Snapshot": api.Snapshot{}, "SnapshotList": api.SnapshotList{},
	"SnapshotRequest": api.SnapshotRequest{}, "StartProcessRequest": api.StartProcessRequest{}, "StatResult": api.StatResult{},
	"StdinRequest": api.StdinRequest{}, "StdinResult": api.StdinResult{}, "TerminalInfo": api.TerminalInfo{},
	"TerminalMessage": api.TerminalMessage{}, "WaitForExitRequest": api.WaitForExitRequest{},
	"WaitForLogRequest": api.WaitForLogRequest{}, "WaitForLogResult": api.WaitForLogResult{},
	"WaitForPortRequest": api.WaitForPortRequest{}, "WaitForPortResult": api.WaitForPortResult{},
	"WatchEvent": api.WatchEvent{}, "WatchRequest": api.WatchRequest{}, "WriteFileRequest": api.WriteFileRequest{},
	"WriteFileResult": api.WriteFileResult{},
	"Mount":           api.Mount{}, "MountRequest": api.MountRequest{}, "BucketCredentials": api.BucketCredentials{},
	"Secret": api.Secret{}, "SecretRequest": api.SecretRequest{}, "PauseRequest": api.PauseRequest{},
	"NetworkPolicy": api.NetworkPolicy{}, "NetworkStatus": api.NetworkStatus{},
	"Volume": api.Volume{}, "VolumeMount": api.VolumeMount{}, "VolumeRequest": api.VolumeRequest{},
	"Key": api.Key{}, "KeyCreated": api.KeyCreated{}, "Quotas": api.Quotas{},
	"Backup": api.Backup{}, "BackupList": api.BackupList{}, "BackupRequest": api.BackupRequest{},
	"Restore": api.Restore{}, "RestoreRequest": api.RestoreRequest{},
}

type openAPISchema struct {
	Properties map[string]struct {
		Enum []string `json:"enum"`
	} `json:"properties"`
	// AllOf composes a schema of others ($ref) and inline parts.
	AllOf []openAPISchemaPart `json:"allOf"`
}

type openAPISchemaPart struct {
	Ref        string                     `json:"$ref"`
	Properties map[string]json.RawMessage `json:"properties"`
}

// propertyNames lists a schema's properties, those of its allOf parts
// included.
func propertyNames(schemas map[string]openAPISchema, name string) []string {
	s := schemas[name]
	var out []string
	for p := range s.Properties {
		out = append(out, p)
	}
	for _, part := range s.AllOf {
		if ref, ok := strings.CutPrefix(part.Ref, "#/components/schemas/"); ok {
			out = append(out, propertyNames(schemas, ref)...)
		}
		for p := range part.Properties {
			out = append(out, p)
		}
	}
	return out
}

func openAPISchemas(t *testing.T) map[string]openAPISchema {
	t.Helper()
	var doc struct {
		Components struct {
			Schemas map[string]openAPISchema `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return doc.Components.Schemas
}

// jsonFields lists the JSON names of a struct's fields, embedded structs'
// included, as encoding/json sees them.
func jsonFields(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		switch {
		case name == "-" || (!f.IsExported() && !f.Anonymous):
			continue
		case f.Anonymous && name == "":
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, jsonFields(ft)...)
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}

// TestOpenAPISchemasMatchWireTypes keeps every schema of /v1/openapi.json
// the shape of the api type the daemon sends or reads: the same fields,
// no more and no fewer, so a client generated from it neither drops a
// field nor sends one the daemon refuses.
func TestOpenAPISchemasMatchWireTypes(t *testing.T) {
	schemas := openAPISchemas(t)
	for name := range schemas {
		v, ok := wireTypes[name]
		if !ok {
			t.Errorf("schema %s has no api type in wireTypes", name)
			continue
		}
		documented := propertyNames(schemas, name)
		wire := jsonFields(reflect.TypeOf(v))
		sort.Strings(documented)
		sort.Strings(wire)
		if !slices.Equal(documented, wire) {
			t.Errorf("schema %s has properties %v; api.%s has %v", name, documented, name, wire)
		}
	}
	for name := range wireTypes {
		if _, ok := schemas[name]; !ok {
			t.Errorf("wireTypes names %s, which openapi.json does not define", name)
		}
	}
}

// TestOpenAPIEnumsMatchWireConstants keeps each enum of the document the
// list of constants the code uses, so a new event type, status or mode is
// documented, and a client generated from the document accepts it.
func TestOpenAPIEnumsMatchWireConstants(t *testing.T) {
	schemas := openAPISchemas(t)
	langs := []string{string(api.LanguagePython), string(api.LanguageJavaScript), string(api.LanguageTypeScript)}
	lifecycle := []string{sandbox.EventCreated, sandbox.EventStarted, sandbox.EventSlept, sandbox.EventWoke,
		sandbox.EventPaused, sandbox.EventResumed, sandbox.EventStopped, sandbox.EventDestroyed, sandbox.EventFailed}
	enums := map[string][]string{
		"CodeEvent.type": {api.CodeEventStart, api.CodeEventStdout, api.CodeEventStderr, api.CodeEventResult,
			api.CodeEventExecutionError, api.CodeEventError, api.CodeEventComplete},
		"CodeEvent.language":                langs,
		"CodeContext.language":              langs,
		"CreateCodeContextRequest.language": langs,
		"RunCodeRequest.language":           langs,
		"RunCodeResult.language":            langs,
		"FileStreamEvent.type":              {api.FileEventMetadata, api.FileEventChunk, api.EventComplete, api.EventError},
		"WatchEvent.type":                   {api.WatchEventWatching, api.WatchEventEvent, api.EventError},
		"WatchEvent.eventType": {api.ChangeCreate, api.ChangeModify, api.ChangeDelete, api.ChangeMoveFrom,
			api.ChangeMoveTo, api.ChangeAttrib},
		"ChangesResult.status": {api.ChangesUnchanged, api.ChangesChanged, api.ChangesResync},
		"BuildEvent.type":      {api.BuildEventLog, api.BuildEventComplete, api.BuildEventError},
		"LifecycleEvent.type":  lifecycle,
		"Process.status": {string(api.ProcessStarting), string(api.ProcessRunning), string(api.ProcessCompleted),
			string(api.ProcessFailed), string(api.ProcessKilled), string(api.ProcessError)},
	}
	for where, want := range enums {
		schema, prop, _ := strings.Cut(where, ".")
		got := schemas[schema].Properties[prop].Enum
		if !slices.Equal(sorted(got), sorted(want)) {
			t.Errorf("openapi.json %s enum = %q, want %q", where, got, want)
		}
	}
	// Every event type enum names only events that end by the one rule
	// when they are terminal ones: nothing else may be called complete,
	// exit or error.
	for _, where := range []string{"CodeEvent.type", "FileStreamEvent.type", "WatchEvent.type", "BuildEvent.type"} {
		schema, prop, _ := strings.Cut(where, ".")
		for _, e := range schemas[schema].Properties[prop].Enum {
			if api.IsTerminal(e) && e != api.EventComplete && e != api.EventError && e != api.EventExit {
				t.Errorf("%s: %q", where, e)
			}
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}
