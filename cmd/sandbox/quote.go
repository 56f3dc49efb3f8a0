package main

import "strings"

// commandLine turns the words after `--` into the one shell command line
// that exec sends.
//
// One word is sent verbatim: it already is a command line, quoted by the
// user for the remote shell, as in
//
//	sandbox exec demo -- 'echo $HOME | wc -c'
//
// Several words are argv, from which the local shell has already removed
// its quotes; each is quoted again where needed, so that the remote shell
// sees exactly the same words:
//
//	sandbox exec demo -- python3 -c 'print(2+2)'   →   python3 -c 'print(2+2)'
func commandLine(words []string) string {
	if len(words) == 1 {
		return words[0]
	}
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = shellQuote(w)
	}
	return strings.Join(quoted, " ")
}

// shellQuote returns s quoted for a POSIX shell: unchanged when it has only
// characters no shell treats specially, otherwise in single quotes, where
// each ' inside becomes: close the quote, an escaped quote \', open again.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	if strings.IndexFunc(s, func(r rune) bool { return !isShellSafe(r) }) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// isShellSafe reports whether r means nothing special to a POSIX shell
// anywhere in a word. '=' is kept unquoted so that `FOO=1 cmd` stays an
// assignment, as it was typed.
func isShellSafe(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return true
	}
	return strings.ContainsRune("@%+=:,./_-", r)
}
