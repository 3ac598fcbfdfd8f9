//go:build noexperiment

package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// errNoExperiment is what lps experiment says in a binary built with the noexperiment tag, as
// the Docker image's is: the experiment kit (its report's plotting library brings 16 MB of fonts
// and drawing backends) runs on the host, where it drives the containers; every role is in
// both builds.
var errNoExperiment = errors.New("this lps is built without the experiment kit (-tags noexperiment, as in the Docker image); run lps experiment from a binary built with a plain go build")

func (a *app) newExperimentCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "experiment failover|performance",
		Short:              "Not in this build: run the experiments from a plain go build of lps",
		DisableFlagParsing: true,
		RunE:               func(*cobra.Command, []string) error { return errNoExperiment },
	}
}
