using System.IO.Pipelines;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Analytics.Events;
using SmtpServer.IO;

namespace Analytics.Submission.Listener;

/// <summary>
/// The connection as SmtpServer sees it: our reader and writer over the socket, upgraded to TLS in
/// place (STARTTLS or implicit TLS). After an upgrade the reader starts fresh, so plaintext a client
/// pipelined behind STARTTLS is dropped rather than executed inside the TLS session.
/// </summary>
internal sealed class SessionPipe : ISecurableDuplexPipe
{
    private readonly TcpClient _client;
    private readonly SessionState _session;
    private readonly Action _release;
    private Stream _stream;
    private ReplyWriter _output;
    private GuardedReader _input;
    private int _disposed;

    public SessionPipe(TcpClient client, SessionState session, Action release)
    {
        _client = client;
        _session = session;
        _release = release;
        _stream = client.GetStream();
        (_input, _output) = CreatePipes(_stream);
    }

    public PipeReader Input => _input;

    public PipeWriter Output => _output;

    public ReplyWriter Replies => _output;

    public bool IsSecure => _stream is SslStream;

    public SslProtocols SslProtocol => (_stream as SslStream)?.SslProtocol ?? SslProtocols.None;

    /// <summary>The negotiated cipher suite's IANA name (TLS_AES_256_GCM_SHA384), or "" before TLS.</summary>
    public string CipherSuite => _stream is SslStream ssl ? ssl.NegotiatedCipherSuite.ToString() : "";

    public async Task UpgradeAsync(X509Certificate certificate, SslProtocols protocols, CancellationToken cancellationToken = default)
    {
        var ssl = new SslStream(_stream, leaveInnerStreamOpen: true);

        // A handshake that never finishes would hold its slot for the whole session timeout.
        using var handshake = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        handshake.CancelAfter(_session.Listener.LimitOptions.Session.HandshakeTimeout);
        try
        {
            await ssl.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificate = certificate,
                ClientCertificateRequired = false,
                EnabledSslProtocols = protocols,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            }, handshake.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            await ssl.DisposeAsync();
            _session.ServerCloses("TLS handshake timeout");
            throw new AuthenticationException("The TLS handshake did not finish in time.");
        }
        catch
        {
            await ssl.DisposeAsync();
            _session.ServerCloses("TLS handshake failed");
            throw;
        }

        _stream = ssl;
        (_input, _output) = CreatePipes(ssl);

        // On an implicit-TLS endpoint (465) no STARTTLS command will say so: the handshake's own event
        // (no reply code), so the session's TLS and its client fingerprint read as with STARTTLS.
        if (_session.Endpoint.ImplicitTls)
        {
            _session.Emit(EventKind.StartTls, EventOutcome.Ok, 0, "", CipherSuite, mechanism: ssl.SslProtocol.ToString());
        }
    }

    /// <summary>Wakes a read waiting for the client, so shutdown can close an idle session.</summary>
    public void Interrupt() => _input.CancelPendingRead();

    private (GuardedReader, ReplyWriter) CreatePipes(Stream stream)
    {
        var output = new ReplyWriter(PipeWriter.Create(stream, new StreamPipeWriterOptions(leaveOpen: true)), _session);
        var input = new GuardedReader(PipeReader.Create(stream, new StreamPipeReaderOptions(leaveOpen: true)), output, _session);
        return (input, output);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        try
        {
            _stream.Dispose();
            _client.Dispose();
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
        {
        }
        finally
        {
            _session.DiscardMessage();
            _release();
        }
    }
}
