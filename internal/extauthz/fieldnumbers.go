package extauthz

// Field numbers of the envoy.service.auth.v3, envoy.config.core.v3, envoy.type.v3, google.rpc and google.protobuf messages
// the Check codec reads and writes. Everything a Check reads is a string, a message or a map, so each arrives as a
// length-delimited field.
const (
	// CheckRequest and what a Check reads inside it.
	checkRequestAttributes = 1 // CheckRequest.attributes
	attributesSource       = 1 // AttributeContext.source (Peer)
	attributesRequest      = 4 // AttributeContext.request
	peerAddress            = 1 // Peer.address (core.v3.Address)
	addressSocketAddress   = 1 // Address.socket_address, one case of the oneof address
	socketAddressAddress   = 2 // SocketAddress.address
	requestHTTP            = 2 // AttributeContext.Request.http
	httpID                 = 1
	httpMethod             = 2
	httpHeaders            = 3 // map<string, string>
	httpPath               = 4
	httpQuery              = 7
	httpHeaderMap          = 13 // core.v3.HeaderMap, sent instead of headers with encode_raw_headers
	headerMapHeaders       = 1

	// CheckResponse and what a Check writes inside it.
	responseStatus          = 1 // google.rpc.Status
	responseDenied          = 2 // DeniedHttpResponse, one case of the oneof http_response
	responseOK              = 3 // OkHttpResponse, the other case
	responseDynamicMetadata = 4 // google.protobuf.Struct
	statusCode              = 1
	statusMessage           = 2
	okHeaders               = 2
	okHeadersToRemove       = 5
	okResponseHeadersToAdd  = 6
	deniedStatus            = 1 // envoy.type.v3.HttpStatus
	deniedHeaders           = 2
	deniedBody              = 3
	httpStatusCode          = 1
	headerOptionHeader      = 1 // core.v3.HeaderValue
	headerOptionAppend      = 3 // append_action
	structFields            = 1 // map<string, Value>
	valueStringValue        = 3

	// Shared by both directions.
	headerValueKey      = 1 // core.v3.HeaderValue
	headerValueValue    = 2
	headerValueRawValue = 3
	mapEntryKey         = 1 // every map<K, V> is a repeated message of {1: key, 2: value}
	mapEntryValue       = 2
)
