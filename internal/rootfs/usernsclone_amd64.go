package rootfs

// cloneUserNSMaker is clone(2) with the new process running
// userNSMakerMain on stack (usernsclone_amd64.s).
//
//go:noescape
func cloneUserNSMaker(flags, stack uintptr) (pid, errno uintptr)
