// Not a module of its own: this go.mod only keeps the go tool of sandboxd's
// module out of this directory. scripts/deps.sh copies precompile.go and
// main.go into gVisor's source to build runsc with its Sentry's seccomp
// programs compiled ahead (see README there).
module sandboxd.invalid/runsc-seccomp

go 1.26
