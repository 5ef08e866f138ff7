package funchost

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"
)

// bindingData is the trigger's binding data (used by binding expressions such as {name}); keys ignore case.
type bindingData map[string]any

func (b bindingData) set(k string, v any) {
	for existing := range b {
		if strings.EqualFold(existing, k) {
			b[existing] = v
			return
		}
	}
	b[k] = v
}

func (b bindingData) get(k string) (any, bool) {
	if v, ok := b[k]; ok {
		return v, true
	}
	for existing, v := range b {
		if strings.EqualFold(existing, k) {
			return v, true
		}
	}
	return nil, false
}

// resolveExpression resolves a binding expression like "processed/{name}-{rand-guid}.bin": {{ and }} are literal
// braces; {rand-guid}, {DateTime}, {sys.randguid|utcnow|methodname} and dotted binding-data paths
// ({Query.id}) are replaced.
func (inv *invocation) resolveExpression(expr string) (string, error) {
	var out strings.Builder
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch {
		case c == '{' && i+1 < len(expr) && expr[i+1] == '{':
			out.WriteByte('{')
			i++
		case c == '}' && i+1 < len(expr) && expr[i+1] == '}':
			out.WriteByte('}')
			i++
		case c == '{':
			end := strings.IndexByte(expr[i:], '}')
			if end < 0 {
				return "", fmt.Errorf("unmatched '{' in %q", expr)
			}
			v, err := inv.lookupExpression(strings.TrimSpace(expr[i+1 : i+end]))
			if err != nil {
				return "", err
			}
			out.WriteString(v)
			i += end
		default:
			out.WriteByte(c)
		}
	}
	return out.String(), nil
}

func (inv *invocation) lookupExpression(name string) (string, error) {
	switch strings.ToLower(name) {
	case "rand-guid":
		return newGUID(), nil
	case "datetime":
		return time.Now().UTC().Format("2006-01-02T15-04-05Z"), nil
	}
	if rest, ok := strings.CutPrefix(strings.ToLower(name), "sys."); ok {
		if v, ok := inv.sysVals[rest]; ok {
			return v, nil
		}
	}
	parts := strings.Split(name, ".")
	var cur any = map[string]any(inv.bd)
	for _, p := range parts {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", fmt.Errorf("no value for named parameter '%s'", name)
		}
		v, found := bindingData(m).get(p)
		if !found || v == nil {
			return "", fmt.Errorf("no value for named parameter '%s'", name)
		}
		cur = v
	}
	switch t := cur.(type) {
	case string:
		return t, nil
	case json.Number:
		return t.String(), nil
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), nil
	case bool:
		if t {
			return "True", nil
		}
		return "False", nil
	default:
		b, _ := json.Marshal(t)
		return string(b), nil
	}
}

// dotnetBase64 decodes like Convert.FromBase64String: whitespace is ignored, padding is required.
func dotnetBase64(s string) ([]byte, bool) {
	clean := strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
	if len(clean)%4 != 0 {
		return nil, false
	}
	b, err := base64.StdEncoding.Strict().DecodeString(clean)
	if err != nil {
		// .NET does not insist on zero padding bits; retry leniently.
		b, err = base64.StdEncoding.DecodeString(clean)
		if err != nil {
			return nil, false
		}
	}
	return b, true
}

// outValue is an output value after the host's GetBindingValue: a JSON string that is valid base64 becomes bytes
// unless the binding has dataType binary; other JSON values keep their type.
type outValue struct {
	bytes   []byte // set when the value is bytes
	isBytes bool
	raw     json.RawMessage // the JSON value otherwise
}

func convertOutput(raw json.RawMessage, binaryDataType bool) (outValue, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return outValue{}, errors.New("empty value")
	}
	if raw[0] == '"' && !binaryDataType {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return outValue{}, err
		}
		if b, ok := dotnetBase64(s); ok {
			return outValue{bytes: b, isBytes: true}, nil
		}
	}
	return outValue{raw: raw}, nil
}

// tokenString is JToken.ToString(): strings unquoted, objects/arrays indented, booleans "True"/"False", null "".
func tokenString(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '"':
		var s string
		_ = json.Unmarshal(raw, &s)
		return s
	case '{', '[':
		var buf bytes.Buffer
		if json.Indent(&buf, raw, "", "  ") != nil {
			return string(raw)
		}
		return buf.String()
	case 't':
		return "True"
	case 'f':
		return "False"
	case 'n':
		return ""
	}
	return string(raw)
}

// queueMessages is FunctionBinding.ReadAsEnumerable + BindAsyncCollectorAsync<byte[]>: a JSON array (or a string
// holding JSON) gives one message per element; an object gives one (indented) message.
func (v outValue) queueMessages() ([][]byte, error) {
	if v.isBytes {
		return [][]byte{v.bytes}, nil
	}
	raw := v.raw
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		if !isJSONText(s) {
			return [][]byte{[]byte(s)}, nil
		}
		if !json.Valid([]byte(s)) {
			return nil, fmt.Errorf("the value looks like JSON but does not parse: %.60q", s)
		}
		raw = json.RawMessage(strings.TrimSpace(s))
	}
	if raw[0] != '[' {
		return [][]byte{[]byte(tokenString(raw))}, nil
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, err
	}
	msgs := make([][]byte, 0, len(elems))
	for _, e := range elems {
		msgs = append(msgs, []byte(tokenString(e)))
	}
	return msgs, nil
}

// blobBytes is FunctionBinding.ConvertValueToStream: bytes as they are, strings as UTF-8, objects and arrays as
// compact JSON, and (faithfully, however odd) integers as 4 little-endian bytes, floats as 8, booleans as 1.
func (v outValue) blobBytes() []byte {
	if v.isBytes {
		return v.bytes
	}
	raw := v.raw
	switch raw[0] {
	case '"':
		var s string
		_ = json.Unmarshal(raw, &s)
		return []byte(s)
	case '{', '[':
		var buf bytes.Buffer
		if json.Compact(&buf, raw) != nil {
			return raw
		}
		return buf.Bytes()
	case 't':
		return []byte{1}
	case 'f':
		return []byte{0}
	case 'n':
		return nil
	}
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return binary.LittleEndian.AppendUint32(nil, uint32(int32(n)))
	}
	if f, err := strconv.ParseFloat(string(raw), 64); err == nil {
		return binary.LittleEndian.AppendUint64(nil, math.Float64bits(f))
	}
	return raw
}

// encodeMessage applies extensions.queues.messageEncoding to a message body.
func encodeMessage(body []byte, encoding string) string {
	if encoding == "none" {
		return strings.ToValidUTF8(string(body), "\uFFFD")
	}
	return base64.StdEncoding.EncodeToString(body)
}

// enqueueCreate adds a message, creating the queue when it does not exist (AddMessageAndCreateIfNotExistsAsync).
func enqueueCreate(ctx context.Context, q *azqueue.QueueClient, text string) error {
	_, err := q.EnqueueMessage(ctx, text, nil)
	if err != nil && queueerror.HasCode(err, queueerror.QueueNotFound) {
		if _, cerr := q.Create(ctx, nil); cerr != nil && !queueerror.HasCode(cerr, queueerror.QueueAlreadyExists) {
			return cerr
		}
		_, err = q.EnqueueMessage(ctx, text, nil)
	}
	return err
}

func (h *Host) enqueueOutput(ctx context.Context, b *bindingConfig, msgs [][]byte) error {
	sc, err := h.conns.get(b.Connection)
	if err != nil {
		return err
	}
	qs, err := sc.queueService()
	if err != nil {
		return err
	}
	q := qs.NewQueueClient(b.QueueName)
	for _, m := range msgs {
		if err := enqueueCreate(ctx, q, encodeMessage(m, h.app.Host.Queues.MessageEncoding)); err != nil {
			return err
		}
	}
	h.notifyQueue(b.QueueName)
	return nil
}

func (h *Host) writeBlobOutput(ctx context.Context, inv *invocation, b *bindingConfig, data []byte) error {
	p, err := inv.resolveExpression(b.Path)
	if err != nil {
		return err
	}
	containerName, blobName, ok := strings.Cut(p, "/")
	if !ok || containerName == "" || blobName == "" {
		return fmt.Errorf("blob path %q must be container/blob", p)
	}
	sc, err := h.conns.get(b.Connection)
	if err != nil {
		return err
	}
	bs, err := sc.blobService()
	if err != nil {
		return err
	}
	cc := bs.NewContainerClient(containerName)
	bb := cc.NewBlockBlobClient(blobName)
	_, err = bb.UploadBuffer(ctx, data, nil)
	if err != nil && bloberror.HasCode(err, bloberror.ContainerNotFound) {
		if _, cerr := cc.Create(ctx, nil); cerr != nil && !bloberror.HasCode(cerr, bloberror.ContainerAlreadyExists) {
			return cerr
		}
		_, err = bb.UploadBuffer(ctx, data, nil)
	}
	if err == nil {
		h.notifyBlobContainer(containerName)
	}
	return err
}
