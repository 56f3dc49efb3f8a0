package session

// cloneExec is clone(2) with the child running execChild on stack
// (vfork_amd64.s).
//
//go:noescape
func cloneExec(flags, stack, pidfd uintptr) (pid, errno uintptr)
