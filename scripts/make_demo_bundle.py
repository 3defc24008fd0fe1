"""Build the bundle `make demo` runs: busybox, printing where it runs."""
import sys

from conformance.bundle import make_bundle

SCRIPT = ('echo "Hello from a pyoci container: hostname $(hostname), pid $$, user $(id -u)"; '
          'echo "root filesystem:"; ls /')

if __name__ == "__main__":
    def name_host(config):
        config["hostname"] = "pyoci-demo"
    print("bundle:", make_bundle(sys.argv[1], ["sh", "-c", SCRIPT], mutate=name_host))
