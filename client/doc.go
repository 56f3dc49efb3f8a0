// Package client is the Go SDK of sandboxd. It owns the client side of the
// public HTTP API: building requests, authenticating them, mapping error
// responses back to typed errors, and decoding buffered and streamed command
// output. It speaks only the wire types of package api and must never import
// anything under internal/, so that programs outside this module can use it.
//
// A Client talks to one daemon. Client.Sandbox returns a cheap handle to one
// sandbox, named by an ID the caller chooses; the first call that names an ID
// creates the sandbox, later calls reuse it:
//
//	c, err := client.New("http://127.0.0.1:7070", client.WithToken(token))
//	if err != nil {
//		return err
//	}
//	sb := c.Sandbox("user-123")
//	res, err := sb.Exec(ctx, "python3 -c 'print(2+2)'")
//	if err != nil {
//		return err
//	}
//	fmt.Print(res.Stdout) // "4\n"; res.ExitCode == 0
//
// Every error the daemon returns is a *Error carrying the HTTP status and a
// stable code; match classes of errors with errors.Is and the sentinels
// ErrNotFound, ErrInvalid, ErrTimeout and so on.
//
// Everything that does I/O takes a context; cancelling it aborts the call,
// and cancelling a stream's context (or closing the stream) ends the
// connection, which makes the daemon kill the command.
package client
