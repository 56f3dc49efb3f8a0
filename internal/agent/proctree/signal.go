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
