package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envAnnotation is the flag annotation listing the environment variables a flag reads, first
// match wins. Every flag reads LPS_<FLAG_NAME>; the original services' names are added as
// aliases so a compose file of the original can run lps unchanged.
const envAnnotation = "lps_env"

// envPrefix is the prefix of every flag's own environment variable.
const envPrefix = "LPS_"

// alias marks an original environment variable; invert flips a boolean (SKIP_DNS_CACHE=true
// means --dns-cache=false).
type alias struct {
	name   string
	invert bool
}

// envName is the LPS_ variable of a flag: --dns-cache reads LPS_DNS_CACHE.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// aliasEnv lets flag name also read the given original variables (after its LPS_ one).
func aliasEnv(fs *pflag.FlagSet, name string, aliases ...alias) {
	f := fs.Lookup(name)
	if f == nil {
		panic("aliasEnv: no flag " + name) // a programming error in a command's definition
	}
	if f.Annotations == nil {
		f.Annotations = map[string][]string{}
	}
	for _, a := range aliases {
		v := a.name
		if a.invert {
			v = "!" + v
		}
		f.Annotations[envAnnotation] = append(f.Annotations[envAnnotation], v)
	}
}

// describeEnv appends "(env LPS_X, ALIAS)" to every flag's usage, so --help tells it.
func describeEnv(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Annotations == nil {
			f.Annotations = map[string][]string{}
		}
		if strings.Contains(f.Usage, "(env ") {
			return
		}
		names := []string{envName(f.Name)}
		for _, a := range f.Annotations[envAnnotation] {
			names = append(names, strings.TrimPrefix(a, "!"))
		}
		f.Usage += " (env " + strings.Join(names, ", ") + ")"
	})
}

// applyEnv sets every flag that was not given on the command line from the first of its
// environment variables that is set. A flag on the command line wins over the environment.
func applyEnv(cmd *cobra.Command, lookup func(string) (string, bool)) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		candidates := append([]string{envName(f.Name)}, f.Annotations[envAnnotation]...)
		for _, c := range candidates {
			name, invert := strings.TrimPrefix(c, "!"), strings.HasPrefix(c, "!")
			val, ok := lookup(name)
			if !ok || val == "" {
				continue
			}
			if f.Value.Type() == "bool" {
				b, perr := parseBool(val)
				if perr != nil {
					err = fmt.Errorf("invalid value %q for --%s from $%s: %v", val, f.Name, name, perr)
					return
				}
				val = strconv.FormatBool(b != invert)
			}
			if serr := f.Value.Set(val); serr != nil {
				err = fmt.Errorf("invalid value %q for --%s from $%s: %v", val, f.Name, name, serr)
				return
			}
			f.Changed = true
			return
		}
	})
	return err
}

// parseBool accepts what the original services accepted (true/1/yes) and their opposites.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "t", "true", "yes", "y", "on":
		return true, nil
	case "0", "f", "false", "no", "n", "off":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean (want true/false, 1/0, yes/no)")
}

// hostPortEnv fills flag (when neither it nor its LPS_ variable was given) from a pair of the
// original's host and port variables, e.g. HTTP_HOST/HTTP_PORT for --listen. defHost and
// defPort stand in for whichever of the two is unset.
func hostPortEnv(cmd *cobra.Command, flag, hostVar, portVar, defHost, defPort string, lookup func(string) (string, bool), format func(host, port string) string) error {
	f := cmd.Flags().Lookup(flag)
	if f == nil || f.Changed {
		return nil
	}
	host, hok := lookup(hostVar)
	port, pok := lookup(portVar)
	if !hok && !pok {
		return nil
	}
	if !hok || host == "" {
		host = defHost
	}
	if !pok || port == "" {
		port = defPort
	}
	if err := validPort(port); err != nil {
		return fmt.Errorf("invalid value %q for --%s from $%s: %v", port, flag, portVar, err)
	}
	if err := f.Value.Set(format(host, port)); err != nil {
		return fmt.Errorf("invalid value for --%s from $%s/$%s: %v", flag, hostVar, portVar, err)
	}
	f.Changed = true
	return nil
}

func validPort(p string) error {
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port must be a number from 0 to 65535")
	}
	return nil
}
