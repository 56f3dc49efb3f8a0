package agent

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		last := time.Now()
		beats := 0
		write := func() { mu.Lock(); last = time.Now(); mu.Unlock() }
		h := startHeartbeat(15*time.Second, func() time.Time { mu.Lock(); defer mu.Unlock(); return last },
			func() error { beats++; write(); return nil })

		time.Sleep(46 * time.Second) // silent: beats at 15, 30, 45
		synctest.Wait()
		if beats != 3 {
			t.Fatalf("%d beats after 46s of silence, want 3", beats)
		}
		// Events every 10s keep the stream busy: no beats.
		for range 5 {
			time.Sleep(10 * time.Second)
			write()
		}
		synctest.Wait()
		if beats != 3 {
			t.Fatalf("%d beats while events flowed, want still 3", beats)
		}
		time.Sleep(16 * time.Second) // 15s after the last event
		synctest.Wait()
		if beats != 4 {
			t.Fatalf("%d beats, want 4", beats)
		}
		h.stop()
	})
}
