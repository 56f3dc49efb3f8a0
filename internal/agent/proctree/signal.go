package proctree

import "golang.org/x/sys/unix"

// Signal sends sig to every process Descendants(root, since) returns and
// reports how many it signalled. Like Kill, each victim is checked through
// a pidfd first, so a reused PID is never signalled.
func Signal(root int, since uint64, sig unix.Signal) (int, error) {
	victims, err := Descendants(root, since)
	if err != nil {
		return 0, err
	}
	return signalAll(victims, sig), nil
}

// SignalCommand is Signal of what CommandProcs(root, since) returns: root's
// descendants and what its session left to this process (the reaper).
func SignalCommand(root int, since uint64, sig unix.Signal) (int, error) {
	victims, err := CommandProcs(root, since)
	if err != nil {
		return 0, err
	}
	return signalAll(victims, sig), nil
}
