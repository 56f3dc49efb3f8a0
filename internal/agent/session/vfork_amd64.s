#include "textflag.h"

// func cloneExec(flags, stack, pidfd uintptr) (pid, errno uintptr)
//
// clone(2) with the child on stack, where it runs execChild, which
// executes the shell or exits (see vfork.go); pidfd is where CLONE_PIDFD
// puts the child's pidfd (clone's parent_tid).
TEXT ·cloneExec(SB),NOSPLIT,$0-40
	MOVQ	flags+0(FP), DI
	MOVQ	stack+8(FP), SI
	MOVQ	pidfd+16(FP), DX
	XORQ	R10, R10
	XORQ	R8, R8
	MOVQ	$56, AX // SYS_clone
	SYSCALL
	CMPQ	AX, $0
	JEQ	child
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	MOVQ	$0, pid+24(FP)
	NEGQ	AX
	MOVQ	AX, errno+32(FP)
	RET
ok:
	MOVQ	AX, pid+24(FP)
	MOVQ	$0, errno+32(FP)
	RET
child:
	CALL	·execChild(SB)
	MOVQ	$127, DI
	MOVQ	$231, AX // SYS_exit_group
	SYSCALL
	INT	$3
