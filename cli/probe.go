package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) newProbeCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "probe URL",
		Short: "Exit 0 if URL answers 2xx to a GET (healthchecks in a scratch image have no curl)",
		Example: `  lps probe http://127.0.0.1:8080/readyz
  # compose: healthcheck: {test: ["CMD", "lps", "probe", "http://127.0.0.1:8080/healthz"]}`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
			if err != nil {
				return &ConfigError{fmt.Errorf("invalid URL %q: %v", args[0], err)}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("probing %s: %w", args[0], err)
			}
			defer resp.Body.Close()
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			if resp.StatusCode < 200 || resp.StatusCode > 299 {
				return fmt.Errorf("probing %s: answered %s", args[0], resp.Status)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", args[0], resp.Status)
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up after this long")
	return cmd
}
