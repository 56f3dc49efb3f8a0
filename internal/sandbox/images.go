package sandbox

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/sandboxd/sandboxd/internal/rootfs"
	"github.com/sandboxd/sandboxd/internal/runtime"
)

// Images resolves an image name to the layers a sandbox root is made of.
type Images interface {
	Resolve(ctx context.Context, name string) (*rootfs.Image, error)
}

// imageRef is what a sandbox's image is resolved by when it boots: the
// digest recorded at creation, so that re-pointing the name does not
// change an existing sandbox; the name for sandboxes without one (the host
// image, or records older than digests).
func imageRef(c Config) string {
	if c.ImageDigest != "" {
		return c.ImageDigest
	}
	return c.Image
}

// agentArgs is the agent's command line: where it finds its socket
// (listen), and the image's working directory, which becomes the
// sessions' default one.
func agentArgs(img *rootfs.Image, listen []string) []string {
	args := append([]string{runtime.AgentPath}, listen...)
	if img.WorkingDir != "" {
		args = append(args, "--workspace", img.WorkingDir)
	}
	if u := imageUser(img.User); u != "" {
		args = append(args, "--user", u)
	}
	return args
}

// mainEnv hands the image's main process (Entrypoint then Cmd) to the
// agent, which runs it as the supervised background process "main" once
// it has a process manager. The variable is private to the agent
// (agent.PrivateEnvPrefix): user code never sees it.
func mainEnv(img *rootfs.Image) []string {
	if len(img.Cmd) == 0 {
		return nil
	}
	data, err := json.Marshal(img.Cmd)
	if err != nil {
		return nil
	}
	return []string{"SANDBOXD_AGENT_MAIN=" + string(data)} // agent.MainEnv
}

// imageUser is the user an image's USER names for the default session:
// "name" or "name:group" give the name, "uid" or "uid:gid" the numeric ID
// (the agent finds or makes its account; sessions get the user's own
// group); "root", "0" and "" give "" (root).
func imageUser(user string) string {
	name, _, _ := strings.Cut(user, ":")
	if name == "root" || strings.Trim(name, "0") == "" {
		return ""
	}
	return name
}
