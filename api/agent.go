package api

// ProtocolVersion is the version of the daemon ↔ agent protocol. The daemon
// refuses agents whose version it does not support. Raise it on any
// incompatible change and add a line below.
//
// History:
//   - 1 (2026-11-21): first version: health, exec, exec/stream.
//   - 2 (2026-11-22): sessions, env, processes, files, watch, git, code
//     contexts, terminals; activity and shutdown for the daemon; the
//     image's main command in SANDBOXD_AGENT_MAIN.
//   - 3 (2026-12-05): the daemon's own routes (health, activity, shutdown,
//     dial) moved under /internal/, declared with every other route in
//     internal/agentapi. An agent of version 2 answers 404 to health.
//   - 4 (2026-12-05): one end-of-stream rule: a code run's own exception
//     is an execution_error event; error always ends a stream.
//   - 5 (2026-12-05): login processes (StartProcessRequest.Login); an
//     agent of version 4 would run their commands without the profile.
//     StartProcessRequest.CloseStdin.
//   - 6 (2026-12-06): POST /processes/start/stream starts a process and
//     streams its log in one call (the E2B layer's commands); an agent of
//     version 5 answers 404.
//   - 7 (2026-12-06): a warm sandbox's name travels in a header of the
//     daemon's first calls (agentapi.NameHeader), which the agent applies
//     before serving the call; POST /internal/name is gone. An agent of
//     version 6 would ignore the header and keep the placeholder's
//     HOSTNAME.
const ProtocolVersion = 7

// AgentHealth is the body of the agent's GET /internal/health.
type AgentHealth struct {
	ProtocolVersion int    `json:"protocolVersion"`
	Version         string `json:"version"`
	// PID is the agent's PID inside the sandbox (1 when it is init).
	PID int `json:"pid"`
}

// AgentActivity is the body of the agent's GET /internal/activity: whether anything
// the agent runs on its own (not a call in flight, which the daemon already
// sees) keeps the sandbox from being idle.
type AgentActivity struct {
	// Busy is true while any count below is non-zero.
	Busy bool `json:"busy"`
	// RunningProcesses counts background processes that are running.
	RunningProcesses int `json:"runningProcesses"`
	// RunningExecutions counts code-context runs in progress.
	RunningExecutions int `json:"runningExecutions"`
}

// AgentLoginRequest is the body of the agent's POST /internal/login,
// which a warm pool's sandbox gets before it joins the pool.
type AgentLoginRequest struct {
	// User is the account whose login processes (StartProcessRequest.Login,
	// in its home, with no env of their own) are to start fast: it is
	// created if missing, and the login shell they are forked from is
	// started in its home. A user name; "root" for root.
	User string `json:"user"`
}

// AgentForkRequest is the body of the agent's POST /internal/fork, sent once
// to the agent of a sandbox restored from a memory snapshot of another.
type AgentForkRequest struct {
	// Env is the fork's own base environment ("NAME=value", as a
	// process's): shells, terminals and interpreters started from now on
	// take it in place of the parent's, and the environment the parent
	// was given through the API is dropped. At most 4096 entries.
	Env []string `json:"env"`
}

// AgentShutdownRequest is the body of the agent's POST /internal/shutdown.
type AgentShutdownRequest struct {
	// Reason is kept by the records of the processes the shutdown kills
	// ("slept", "stopped"); 1 to 200 bytes.
	Reason string `json:"reason"`
}
