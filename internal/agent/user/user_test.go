package user

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"dev": true, "_svc": true, "a-b_1": true, "": false, "1abc": false, "-a": false,
		"Dev": false, "a:b": false, "a\nb": false, "a b": false, strings.Repeat("a", 33): false, "../x": false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestEnsureCreatesOnceWithAHome(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chowns the home directory")
	}
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc")
	os.Mkdir(etc, 0o755)
	os.WriteFile(filepath.Join(etc, "passwd"), []byte("root:x:0:0:root:/root:/bin/bash\nold:x:1000:1000::/home/old:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "group"), []byte("root:x:0:\nold:x:1000:\nusers:x:1001:\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "shadow"), []byte("root:*:19000:0:99999:7:::\n"), 0o640)
	db := &DB{Etc: etc, HomeRoot: filepath.Join(dir, "home")}
	var wg sync.WaitGroup
	accts := make([]Account, 8)
	for i := range accts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := db.Ensure("agent")
			if err != nil {
				t.Error(err)
			}
			accts[i] = a
		}()
	}
	wg.Wait()
	for _, a := range accts[1:] {
		if a != accts[0] {
			t.Fatalf("concurrent Ensure disagree: %+v vs %+v", a, accts[0])
		}
	}
	a := accts[0]
	// 1000 is taken by a user, 1001 by a group.
	if a.UID != 1002 || a.GID != 1002 || a.Home != filepath.Join(dir, "home", "agent") {
		t.Fatalf("account = %+v", a)
	}
	passwd, _ := os.ReadFile(filepath.Join(etc, "passwd"))
	if strings.Count(string(passwd), "\nagent:x:") != 1 {
		t.Errorf("passwd:\n%s", passwd)
	}
	shadow, _ := os.ReadFile(filepath.Join(etc, "shadow"))
	if !strings.Contains(string(shadow), "agent:!:") {
		t.Errorf("shadow has no locked entry:\n%s", shadow)
	}
	if fi, err := os.Stat(filepath.Join(etc, "shadow")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("shadow mode changed: %v %v", fi.Mode(), err)
	}
	fi, err := os.Stat(a.Home)
	if err != nil || !fi.IsDir() {
		t.Fatalf("home: %v", err)
	}
	old, err := db.Ensure("old")
	if err != nil || old.UID != 1000 || old.Home != "/home/old" {
		t.Errorf("existing user = %+v, %v", old, err)
	}
	if _, err := db.Ensure("bad:name"); err == nil {
		t.Error("invalid name accepted")
	}
}

func TestEnsureUIDFindsOrMakesTheAccount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chowns the home directory")
	}
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc")
	os.Mkdir(etc, 0o755)
	os.WriteFile(filepath.Join(etc, "passwd"), []byte("root:x:0:0:root:/root:/bin/bash\napp:x:1000:1000::/srv:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "group"), []byte("root:x:0:\napp:x:1000:\nstaff:x:2000:\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "shadow"), []byte("root:*:19000:0:99999:7:::\n"), 0o640)
	db := &DB{Etc: etc, HomeRoot: filepath.Join(dir, "home")}
	if a, err := db.EnsureUID(1000); err != nil || a != (Account{Name: "app", UID: 1000, GID: 1000, Home: "/srv"}) {
		t.Errorf("EnsureUID(1000) = %+v, %v; want the image's app", a, err)
	}
	a, err := db.EnsureUID(2000)
	if err != nil || a.Name != "u2000" || a.UID != 2000 || a.GID != 2000 {
		t.Fatalf("EnsureUID(2000) = %+v, %v; want u2000 made with ID 2000 in the existing group 2000", a, err)
	}
	if again, err := db.EnsureUID(2000); err != nil || again != a {
		t.Errorf("EnsureUID(2000) again = %+v, %v; want %+v", again, err, a)
	}
	if fi, err := os.Stat(a.Home); err != nil || fi.Sys() == nil {
		t.Errorf("home of u2000: %v", err)
	}
	for _, bad := range []int{0, -1, 1 << 31} {
		if _, err := db.EnsureUID(bad); err == nil {
			t.Errorf("EnsureUID(%d) succeeded", bad)
		}
	}
	os.WriteFile(filepath.Join(etc, "passwd"), []byte("u3000:x:3001:3001::/home/u3000:/bin/sh\n"), 0o644)
	if _, err := db.EnsureUID(3000); err == nil {
		t.Error("EnsureUID(3000) succeeded though u3000 has ID 3001")
	}
}

// TestEnsureSeesPasswdChange: a lookup reads passwd again after any
// change, also a rewrite in place at the same size just after a lookup
// (within the coarse clock's tick, its stamp is not trusted), and a file
// replaced by another.
func TestEnsureSeesPasswdChange(t *testing.T) {
	etc := t.TempDir()
	passwd := filepath.Join(etc, "passwd")
	write := func(uid string) {
		t.Helper()
		f, err := os.OpenFile(passwd, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("root:x:0:0:root:/root:/bin/bash\nbob:x:" + uid + ":" + uid + "::/home/bob:/bin/sh\n")
		f.Close()
	}
	db := &DB{Etc: etc}
	for _, uid := range []string{"1001", "1002", "1003"} {
		write(uid)
		for range 2 {
			a, err := db.Ensure("bob")
			if err != nil || strconv.Itoa(a.UID) != uid {
				t.Fatalf("Ensure(bob) = %+v, %v; want user ID %s", a, err, uid)
			}
		}
	}
	os.Remove(passwd)
	write("1004")
	if a, err := db.Ensure("bob"); err != nil || a.UID != 1004 {
		t.Fatalf("after a new file: Ensure(bob) = %+v, %v; want user ID 1004", a, err)
	}
}

func TestLoginShellIsWhatBashSetsShellTo(t *testing.T) {
	etc := t.TempDir()
	os.WriteFile(filepath.Join(etc, "passwd"), []byte("root:x:0:0:root:/root:/bin/bash\n"+
		"empty:x:7:7::/:\nnologin:x:8:8::/:/usr/sbin/nologin\nagain:x:8:8::/:/bin/zsh\nshort:x:9:9\n"), 0o644)
	for uid, want := range map[int]string{0: "/bin/bash", 7: "/bin/sh", 8: "/usr/sbin/nologin", 9: "/bin/sh", 4242: "/bin/sh"} {
		if got := LoginShell(etc, uid); got != want {
			t.Errorf("LoginShell(%d) = %q, want %q", uid, got, want)
		}
	}
	if got := LoginShell(filepath.Join(etc, "none"), 0); got != "/bin/sh" {
		t.Errorf("without passwd: %q, want /bin/sh", got)
	}
	// The file is read a line at a time, each at most 1 MiB: a root in
	// the sandbox decides its size.
	os.WriteFile(filepath.Join(etc, "passwd"), []byte(strings.Repeat("x", 2<<20)+"\nroot:x:0:0:root:/root:/bin/bash\n"), 0o644)
	if got := LoginShell(etc, 0); got != "/bin/sh" {
		t.Errorf("after an over-long line: %q, want /bin/sh", got)
	}
}
