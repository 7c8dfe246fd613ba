# A Nomad job running the Docker image of ../docker/Dockerfile. Every attribute the guide's
# test reads is on one line.
job "app" {
  datacenters = ["dc1"]

  update {
    max_parallel = 1
  }

  group "app" {
    count = 3

    network {
      port "http" {
        to = 8080
      }
    }

    task "app" {
      driver = "docker"

      # handover's graceful stop, and at least --drain-timeout (20s) with a margin. Nomad
      # clients cap it at their max_kill_timeout (30s by default).
      kill_signal = "SIGTERM"
      kill_timeout = "30s"

      config {
        image = "registry.example.com/app:1.0"
        ports = ["http"]
        entrypoint = ["/usr/local/bin/handover"]
        args = ["run", "--name", "app", "--listen", "0.0.0.0:8080", "--drain-timeout", "20s", "--", "/usr/local/bin/hello", "--listen", "0.0.0.0:8080", "--drain-timeout", "20s"]
      }

      service {
        name = "app"
        port = "http"

        check {
          type = "http"
          path = "/"
          interval = "2s"
          timeout = "1s"
        }
      }
    }
  }
}
