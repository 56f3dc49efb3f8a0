package rename

// cloneKeeper is clone(2) with the new process running keeperMain on
// stack (keeper_amd64.s).
//
//go:noescape
func cloneKeeper(flags, stack uintptr) (pid, errno uintptr)
