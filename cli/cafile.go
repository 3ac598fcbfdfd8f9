package cli

import (
	"github.com/spf13/pflag"

	"github.com/lpsdev/lps/mqttconn"
)

// addCAFileFlag binds --ca-file, for every command that connects to a broker: the image has
// no CA bundle, and a private CA is the usual one for an mqtts:// broker on a plant network.
func addCAFileFlag(fs *pflag.FlagSet, opts *mqttconn.Options) {
	fs.StringVar(&opts.CAFile, "ca-file", "", "PEM bundle of the CA certificates an mqtts:// broker is verified with (empty: the system's)")
}
