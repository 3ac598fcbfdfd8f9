// Package rastsimtest starts rast-sim for other packages' tests.
package rastsimtest

import (
	"testing"

	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/roles/rastsim"
)

// StartProd starts rast-sim with the original's production request mapping, answering at
// once (model none), on a loopback port until the test ends; it returns the simulator and its
// base URL. Without the original's data the test is skipped.
func StartProd(t *testing.T) (*rastsim.Sim, string) {
	t.Helper()
	cfg := rastsim.Config{Model: rastsim.ModelNone, MappingFile: testutil.SharedData(t, "gs_requests_mapping_prod_workload.json")}
	cfg.Listener = testutil.Listen(t)
	sim, err := rastsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, sim)
	return sim, "http://" + sim.Addr().String()
}
