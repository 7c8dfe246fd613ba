// Peer for handover-bench: a minimal HTTP server upgraded with cloudflare/tableflip, following
// tableflip's http example: SIGHUP -> Upgrade(); Ready(); wait for Exit(); then
// http.Server.Shutdown. SIGTERM stops it the same graceful way.
// Written for handover-bench; built offline in GOPATH mode from Debian's packaged sources.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

// greeting is set at build time: -ldflags "-X main.greeting=...".
var greeting = "v1 Welcome Server"

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	pidFile := flag.String("pid-file", "", "path to pid file")
	drain := flag.Duration("drain-timeout", 10*time.Second, "shutdown deadline")
	flag.Parse()
	log.SetPrefix(fmt.Sprintf("%d ", os.Getpid()))

	upg, err := tableflip.New(tableflip.Options{PIDFile: *pidFile})
	if err != nil {
		log.Fatalln("tableflip:", err)
	}
	defer upg.Stop()

	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM)
		for s := range sig {
			if s == syscall.SIGTERM {
				upg.Stop()
				return
			}
			if err := upg.Upgrade(); err != nil {
				log.Println("upgrade failed:", err)
			}
		}
	}()

	ln, err := upg.Listen("tcp", *listen)
	if err != nil {
		log.Fatalln("can't listen:", err)
	}
	body := fmt.Sprintf("%s pid=%d", greeting, os.Getpid())
	server := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(body))
	})}
	go func() {
		if err := server.Serve(ln); err != http.ErrServerClosed {
			log.Println("serve:", err)
		}
	}()
	if err := upg.Ready(); err != nil {
		log.Fatalln("ready:", err)
	}
	<-upg.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	_ = server.Shutdown(ctx)
}
