# A Nomad job running a server built on the handover library (the `hello` example) in a
# Docker image. Every attribute the guide's test reads is on one line.
job "hello" {
  datacenters = ["dc1"]

  update {
    max_parallel = 1
  }

  group "hello" {
    count = 3

    network {
      port "http" {
        to = 8080
      }
    }

    task "hello" {
      driver = "docker"

      # The graceful stop, and at least --lame-duck + --drain-timeout (5s + 20s) with a margin.
      # Nomad clients cap it at their max_kill_timeout (30s by default). No shutdown_delay:
      # the lame duck serves on while the check fails and Consul drops the instance.
      kill_signal = "SIGTERM"
      kill_timeout = "30s"

      config {
        image = "registry.example.com/hello:1.0"
        ports = ["http"]
        entrypoint = ["/usr/local/bin/hello"]
        args = ["--listen", "0.0.0.0:8080", "--lame-duck", "5s", "--drain-timeout", "20s"]
      }

      service {
        name = "hello"
        port = "http"

        check {
          type = "http"
          path = "/healthz"
          interval = "2s"
          timeout = "1s"
        }
      }
    }
  }
}
