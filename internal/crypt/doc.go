// Package crypt implements the encryption the SharePoint Online Migration API requires for SPO-provided
// containers, and the encrypted event envelope SPO writes to the report queue.
//
// # Blob format
//
// Every blob (content files and manifest XMLs alike) is encrypted with AES-256-CBC under the job key
// (the 32-byte EncryptionKey returned by ProvisionMigrationContainers) and a fresh random 16-byte IV
// (NewIV). The plaintext is padded with PKCS#7 (1 to 16 bytes, always present, so a plaintext that is
// a multiple of 16 bytes gains a whole block of padding; see EncryptedSize). The blob body is the
// ciphertext alone, with no IV prefix: the IV travels separately as the blob metadata property "IV",
// base64 (standard alphabet, padded) of the 16 IV bytes (ParseIV reads it back).
//
// NewEncryptReader and NewDecryptReader stream in constant memory (at most BufferSize bytes per
// reader, plus a few blocks). EncryptBytes and DecryptBytes are for small payloads (events, messages).
//
// # Event envelope
//
// SPO reports job events as JSON objects whose values are all strings, for example
//
//	{"Event":"JobProgress","JobId":"<guid>","Time":"05/20/2025 09:18:48.132","FilesCreated":"12",…}
//
// (Time is MM/dd/yyyy HH:mm:ss.fff in UTC). On the report queue the message text is base64 of a JSON
// object: for an encrypted job it is the envelope
//
//	{"Label":"Encrypted","JobId":"<guid>","IV":"<base64 IV>","Content":"<base64 ciphertext>"}
//
// whose Content decrypts (job key, envelope IV, AES-256-CBC, PKCS#7) to the event JSON; otherwise the
// text is the event JSON itself. OpenMessage undoes both forms, SealEvent produces the encrypted one,
// and ParseEvent reads the event JSON that GetMigrationJobProgress returns in its Logs.
//
// Errors never contain key material, IVs of secret inputs or decrypted content; compare them with
// errors.Is against the sentinel errors of this package.
package crypt
