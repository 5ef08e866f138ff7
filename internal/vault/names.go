package vault

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Secret name prefixes (docs/CONTRIBUTING.md, "Shared names").
const (
	JobSecretPrefix   = "spomig-job-"
	QueueSecretPrefix = "spomig-queue-"
)

// maxNameLen is Key Vault's limit for secret names (^[0-9a-zA-Z-]{1,127}$).
const maxNameLen = 127

// hashLen is how many hex digits of SHA-256 a name carries when it needs a hash (64 bits).
const hashLen = 16

// JobSecretName is the secret name of a job: JobSecretPrefix + id when id is already a valid name part
// (letters, digits, '-') and short enough, which covers GUIDs. Otherwise the id is sanitised (every other
// character becomes '-', the result is cut to fit) and followed by '-' and the first 16 hex digits of the
// SHA-256 of the original id, so two ids that sanitise alike still get different names. The result always
// matches ^[0-9a-zA-Z-]{1,127}$.
func JobSecretName(id string) string {
	room := maxNameLen - len(JobSecretPrefix)
	if id != "" && len(id) <= room && isNamePart(id) {
		return JobSecretPrefix + id
	}
	sum := sha256.Sum256([]byte(id))
	h := hex.EncodeToString(sum[:])[:hashLen]
	var b strings.Builder
	for _, r := range id {
		if b.Len() >= room-hashLen-1 {
			break
		}
		if isNameRune(r) {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return JobSecretPrefix + h
	}
	return JobSecretPrefix + b.String() + "-" + h
}

// NormalizeSite is the canonical form of a site URL for hashing and comparison: lower case, no trailing slash.
func NormalizeSite(site string) string {
	return strings.TrimRight(strings.ToLower(strings.TrimSpace(site)), "/")
}

// SiteHash is the first 16 hex digits of the SHA-256 of NormalizeSite(site).
func SiteHash(site string) string {
	sum := sha256.Sum256([]byte(NormalizeSite(site)))
	return hex.EncodeToString(sum[:])[:hashLen]
}

// QueueSecretName is the secret name of a site's migration queue: QueueSecretPrefix + SiteHash(site).
func QueueSecretName(site string) string { return QueueSecretPrefix + SiteHash(site) }

func isNameRune(r rune) bool {
	return r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-'
}

func isNamePart(s string) bool {
	for _, r := range s {
		if !isNameRune(r) {
			return false
		}
	}
	return true
}
