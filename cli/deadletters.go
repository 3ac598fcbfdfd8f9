package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lpsdev/lps/deadletters"
	"github.com/lpsdev/lps/mqttconn"
)

func (a *app) newDeadLettersCmd() *cobra.Command {
	var (
		cfg     deadletters.Config
		replay  bool
		to      string
		asJSON  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "dead-letters",
		Short: "List the alarms mqtt2http could never deliver, or replay them",
		Long: `dead-letters reads the dead-letter queue ($share/dead_letters/lps/dead-letter), which the embedded
broker keeps until someone reads it: one line per dead letter (age, kind, Request-Id, service,
attempts, topic, reason). Listing takes nothing off the queue. With --replay each dead letter's
alarm is published back to the topic it came from (--to for another), once, and taken off the
queue only after the broker confirmed the republished alarm. Exit 1 when a dead letter could
not be replayed; the rest stay in the queue.`,
		Example: `  lps dead-letters --broker mqtt://127.0.0.1:1883
  lps dead-letters --broker mqtt://broker:1883 --json | jq .request_id
  lps dead-letters --broker mqtt://broker:1883 --replay`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.Broker, "broker", "mqtt://127.0.0.1:1883", "MQTT v5 broker URL")
	fs.StringVar(&cfg.Username, "username", "", "broker user name")
	fs.StringVar(&cfg.Password, "password", "", "broker password")
	addCAFileFlag(fs, &cfg.MQTT)
	fs.StringVar(&cfg.ClientID, "client-id", deadletters.DefaultClientID, "MQTT client id of the reader (a persistent session)")
	fs.StringVar(&cfg.Group, "group", "", `share group of the dead-letter queue (default "dead_letters")`)
	fs.StringVar(&cfg.Topic, "topic", "", `dead-letter topic (default "lps/dead-letter")`)
	fs.IntVar(&cfg.Limit, "limit", deadletters.DefaultLimit, "read at most this many dead letters")
	fs.DurationVar(&cfg.Idle, "idle", deadletters.DefaultIdle, "stop when no dead letter arrived for this long")
	fs.DurationVar(&timeout, "timeout", deadletters.DefaultTimeout, "give up after this long")
	fs.BoolVar(&replay, "replay", false, "publish each dead letter's alarm back to its topic and take it off the queue")
	fs.StringVar(&to, "to", "", "with --replay, publish to this topic instead of each dead letter's own")
	fs.BoolVar(&asJSON, "json", false, "print each dead letter as its JSON envelope, one per line")
	aliasEnv(fs, "broker", alias{name: "MQTT_BROKER"})
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if timeout <= 0 {
			return &ConfigError{fmt.Errorf("invalid --timeout %s: must be positive", timeout)}
		}
		if to != "" {
			if !replay {
				return &ConfigError{fmt.Errorf("--to %q needs --replay", to)}
			}
			if err := mqttconn.ValidateTopic(to); err != nil {
				return &ConfigError{fmt.Errorf("invalid --to: %v", err)}
			}
		}
		logger, closeLog, err := a.logger("dead-letters")
		if err != nil {
			return err
		}
		defer closeLog()
		cfg.Logger = logger.Named("dead-letters")
		r, err := deadletters.New(cfg)
		if err != nil {
			return &ConfigError{flagError(cmd.Flags(), err)}
		}
		ctx, stop := a.signalContext(cmd.Context())
		defer stop()
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()

		out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
		list := newDeadLetterList(out, asJSON)
		var res deadletters.Result
		if replay {
			res, err = r.ReplayAll(ctx, to, func(e deadletters.Entry, err error) {
				if err == nil {
					list.add(e)
				}
			})
		} else {
			res, err = r.List(ctx, list.add)
		}
		list.flush()
		switch {
		case replay:
			fmt.Fprintf(errOut, "%d dead letters replayed and taken off the queue\n", res.Taken)
		case res.Read == 0:
			fmt.Fprintln(errOut, "no dead letters")
		default:
			fmt.Fprintf(errOut, "%d dead letters (still in the queue)\n", res.Read)
		}
		if res.More {
			fmt.Fprintf(errOut, "stopped at --limit %d: more may wait\n", cfg.Limit)
		}
		if err != nil && replay {
			return fmt.Errorf("%w; it and the dead letters after it stay in the queue", err)
		}
		return err
	}
	return cmd
}

// deadLetterList prints dead letters as a table (or JSON lines).
type deadLetterList struct {
	w      io.Writer
	tw     *tabwriter.Writer
	asJSON bool
	now    time.Time
	header bool
}

func newDeadLetterList(w io.Writer, asJSON bool) *deadLetterList {
	return &deadLetterList{w: w, tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0), asJSON: asJSON, now: time.Now()}
}

func (l *deadLetterList) add(e deadletters.Entry) {
	if l.asJSON {
		if e.Err != nil {
			b, _ := json.Marshal(map[string]string{"error": e.Err.Error(), "raw": string(e.Raw)})
			fmt.Fprintf(l.w, "%s\n", b)
			return
		}
		fmt.Fprintf(l.w, "%s\n", strings.TrimSpace(string(e.Raw)))
		return
	}
	if !l.header {
		fmt.Fprintln(l.tw, "AGE\tKIND\tREQUEST-ID\tSERVICE\tATTEMPTS\tTOPIC\tREASON")
		l.header = true
	}
	if e.Err != nil {
		fmt.Fprintf(l.tw, "-\tunreadable\t-\t-\t-\t-\t%v: %.80q\n", e.Err, e.Raw)
		return
	}
	fmt.Fprintf(l.tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.Age(l.now).Round(time.Second), orDash(e.Kind), orDash(e.RequestID),
		orDash(e.Service), e.Attempts, e.Topic, e.Reason)
}

func (l *deadLetterList) flush() { l.tw.Flush() }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
