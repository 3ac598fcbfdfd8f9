// Package roles holds what every lps role shares: the settings of an HTTP-serving role, of an
// upstream, and HTTPService, which assembles listener, server, admin endpoints, metrics and
// logging from the shared layers (tcptune, transport, dnscache) so that a role only writes its
// handler. The roles themselves live in the sub-packages, one per role.
package roles
