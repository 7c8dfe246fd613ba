// Peer for handover-bench: a minimal HTTP server upgraded with facebookgo/grace
// (SIGUSR2 re-executes the binary at the same path and hands over the listener).
// Written for handover-bench; built offline in GOPATH mode from Debian's packaged sources.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"

	"github.com/facebookgo/grace/gracehttp"
)

// greeting is set at build time: -ldflags "-X main.greeting=...".
var greeting = "v1 Welcome Server"

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	flag.Parse()
	body := fmt.Sprintf("%s pid=%d", greeting, os.Getpid())
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(body))
	})
	if err := gracehttp.Serve(&http.Server{Addr: *listen, Handler: handler}); err != nil {
		fmt.Fprintln(os.Stderr, "grace:", err)
		os.Exit(1)
	}
}
