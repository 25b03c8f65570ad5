// File: examples/presence_server/flex_stream.h
//
// One connection's byte stream, plain TCP or TLS: the server's sessions are
// written once against FlexStream, and whether a listener speaks http/ws or
// https/wss is decided when the connection is accepted. It is an
// AsyncStream (Beast's HTTP and WebSocket run over it) and it tears down as
// the stream it holds does.
#ifndef PRESENCE_EXAMPLES_SERVER_FLEX_STREAM_H_
#define PRESENCE_EXAMPLES_SERVER_FLEX_STREAM_H_

#include <optional>
#include <utility>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>

namespace presence_server {

class FlexStream {
 public:
  using tcp_stream = boost::beast::tcp_stream;
  using tls_stream = boost::beast::ssl_stream<tcp_stream>;
  using executor_type = tcp_stream::executor_type;

  // Plain TCP.
  explicit FlexStream(boost::asio::ip::tcp::socket socket) : plain_(std::in_place, std::move(socket)) {}
  // TLS with `context`, which must outlive the stream; the handshake is the
  // caller's (tls()->async_handshake).
  FlexStream(boost::asio::ip::tcp::socket socket, boost::asio::ssl::context& context)
      : tls_(std::in_place, std::move(socket), context) {}

  bool is_tls() const { return tls_.has_value(); }
  tls_stream* tls() { return tls_ ? &*tls_ : nullptr; }
  // The TCP stream under it all: timeouts, the socket.
  tcp_stream& tcp() { return tls_ ? boost::beast::get_lowest_layer(*tls_) : *plain_; }

  executor_type get_executor() { return tcp().get_executor(); }

  template <class Buffers, class Handler>
  void async_read_some(const Buffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_read_some(buffers, std::forward<Handler>(handler));
    } else {
      plain_->async_read_some(buffers, std::forward<Handler>(handler));
    }
  }

  template <class Buffers, class Handler>
  void async_write_some(const Buffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_write_some(buffers, std::forward<Handler>(handler));
    } else {
      plain_->async_write_some(buffers, std::forward<Handler>(handler));
    }
  }

  // Beast closes a stream this way when a WebSocket times out.
  friend void beast_close_socket(FlexStream& s) {
    boost::beast::error_code ec;
    s.tcp().socket().close(ec);
  }

  // The WebSocket close: TLS's close_notify, then the socket's.
  friend void teardown(boost::beast::role_type role, FlexStream& s, boost::beast::error_code& ec) {
    using boost::beast::websocket::teardown;
    if (s.tls_) {
      teardown(role, *s.tls_, ec);
    } else {
      teardown(role, s.plain_->socket(), ec);
    }
  }

  template <class Handler>
  friend void async_teardown(boost::beast::role_type role, FlexStream& s, Handler&& handler) {
    using boost::beast::websocket::async_teardown;
    if (s.tls_) {
      async_teardown(role, *s.tls_, std::forward<Handler>(handler));
    } else {
      async_teardown(role, s.plain_->socket(), std::forward<Handler>(handler));
    }
  }

 private:
  std::optional<tcp_stream> plain_;
  std::optional<tls_stream> tls_;
};

}  // namespace presence_server

#endif  // PRESENCE_EXAMPLES_SERVER_FLEX_STREAM_H_
