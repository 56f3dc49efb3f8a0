#include "textflag.h"

// func cloneUserNSMaker(flags, stack uintptr) (pid, errno uintptr)
//
// clone(2) with the new process on stack, which runs userNSMakerMain
// there and never comes back (see usernsclone.go).
TEXT ·cloneUserNSMaker(SB),NOSPLIT,$0-32
	MOVQ	flags+0(FP), DI
	MOVQ	stack+8(FP), SI
	XORQ	DX, DX
	XORQ	R10, R10
	XORQ	R8, R8
	MOVQ	$56, AX // SYS_clone
	SYSCALL
	CMPQ	AX, $0
	JEQ	child
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	MOVQ	$0, pid+16(FP)
	NEGQ	AX
	MOVQ	AX, errno+24(FP)
	RET
ok:
	MOVQ	AX, pid+16(FP)
	MOVQ	$0, errno+24(FP)
	RET
child:
	CALL	·userNSMakerMain(SB)
	MOVQ	$1, DI
	MOVQ	$231, AX // SYS_exit_group
	SYSCALL
	INT	$3
