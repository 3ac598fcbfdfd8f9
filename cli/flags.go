package cli

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/lpsdev/lps/logging"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/tcptune"
	"github.com/lpsdev/lps/transport"
)

// serverFlags binds the flags of a role that serves HTTP.
type serverFlags struct {
	cfg        *roles.Server
	listenFlag string
}

// addServerFlags binds cfg; listenFlag names its address flag ("listen" for the roles that
// serve an API, "admin-listen" for those whose HTTP listener only serves health and metrics).
func addServerFlags(fs *pflag.FlagSet, cfg *roles.Server, listenFlag, defListen, defName string) serverFlags {
	usage := "HTTP address to listen on, host:port"
	if listenFlag == "admin-listen" {
		// Health and metrics only: nothing outside the host needs them unless told so.
		usage = "address of the admin listener (health, metrics), host:port; loopback by default, 0.0.0.0:9090 to reach it from another host or through a container's published port"
	}
	fs.StringVar(&cfg.Listen, listenFlag, defListen, usage)
	fs.IntVar(&cfg.Backlog, "backlog", tcptune.DefaultBacklog, "listen backlog (the kernel caps it at net.core.somaxconn; 0: the default)")
	fs.StringVar(&cfg.ServiceName, "service-name", defName, "instance name: log file name, metrics, MQTT client id")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", 1<<20, "largest request body accepted; larger ones get 413")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 65*time.Second, "how long a graceful shutdown waits for requests in flight")
	aliasEnv(fs, "service-name", alias{name: "SERVICE_NAME"})
	return serverFlags{cfg: cfg, listenFlag: listenFlag}
}

// addConcurrencyFlag binds --max-concurrent, for the roles that serve an API (the bridges'
// and the broker's admin listeners have none to bound).
func addConcurrencyFlag(fs *pflag.FlagSet, cfg *roles.Server) {
	fs.IntVar(&cfg.MaxConcurrent, "max-concurrent", transport.DefaultMaxConcurrent, "API requests handled at once; more are answered 503 with Retry-After (negative: no limit)")
}

// validate checks what only the command line decides: every role it starts has a name (for
// its log file, metrics and MQTT client id). The role validates the rest.
func (f serverFlags) validate() error {
	if err := logging.CheckServiceName(f.cfg.ServiceName); err != nil {
		return fmt.Errorf("invalid --service-name %q (env LPS_SERVICE_NAME, SERVICE_NAME): %w", f.cfg.ServiceName, err)
	}
	return nil
}

// upstreamFlags binds the flags of a role's outbound HTTP requests.
type upstreamFlags struct {
	cfg      *roles.Upstream
	dnsCache bool
}

func addUpstreamFlags(fs *pflag.FlagSet, cfg *roles.Upstream, what string) *upstreamFlags {
	f := &upstreamFlags{cfg: cfg}
	fs.StringVar(&cfg.URL, "upstream", "", "URL to forward to ("+what+"); a URL without a path gets the alarm path; several comma-separated URLs share the alarms by Request-Id")
	fs.BoolVar(&cfg.HTTP2, "http2", false, "send upstream requests as HTTP/2 over cleartext with prior knowledge")
	fs.BoolVar(&f.dnsCache, "dns-cache", true, "cache name resolution; entries expire and are dropped when a connection fails")
	fs.DurationVar(&cfg.Timeout, "timeout", 60*time.Second, "timeout of one upstream request; on expiry the caller gets 504")
	aliasEnv(fs, "upstream", alias{name: "TARGET_URL"})
	aliasEnv(fs, "http2", alias{name: "USE_HTTP_2"})
	aliasEnv(fs, "dns-cache", alias{name: "SKIP_DNS_CACHE", invert: true})
	return f
}

// apply maps --dns-cache to the config (the role validates the rest).
func (f *upstreamFlags) apply() {
	f.cfg.NoDNSCache = !f.dnsCache
}
