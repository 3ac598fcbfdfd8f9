// Command lps is the Legacy Proxy System in one binary: its subcommand selects the role.
package main

import (
	"os"

	"github.com/lpsdev/lps/cli"
)

// version is set at link time: -ldflags "-X main.version=v1.2.3".
var version string

func main() {
	os.Exit(cli.Execute(cli.NewRoot(cli.Options{Version: version}), os.Args[1:]))
}
