using System.Globalization;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using Analytics.Events;
using MailKit.Net.Smtp;
using MailKit.Security;
using MimeKit;

namespace Analytics.Simulation.Live;

/// <summary>
/// Runs one <see cref="SessionScript"/> over a real connection from the script's own source address
/// (bound in 127.0.0.0/8 before connecting). Well-behaved scripts go through MailKit, a client no one
/// here wrote; bots go through a raw socket that sends exactly the script's commands. Certificates
/// are not checked: live mode talks to a listener on loopback only.
/// </summary>
public static class LiveClient
{
    /// <summary>Plays <paramref name="script"/>; think times are divided by <paramref name="speed"/>.</summary>
    public static async Task RunAsync(SessionScript script, IPEndPoint server, double speed, TimeProvider time, CancellationToken cancellationToken)
    {
        try
        {
            if (script.WellBehaved && IsMailKitShape(script))
            {
                await RunMailKitAsync(script, server, cancellationToken);
            }
            else
            {
                await RunRawAsync(script, server, speed, time, cancellationToken);
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or SmtpProtocolException or SmtpCommandException or AuthenticationException or ObjectDisposedException)
        {
            // The server ended the session (a defense) or refused us: that is traffic too.
        }
    }

    // MailKit runs one shape: [STARTTLS], one AUTH (submission), one message from a real sender, QUIT.
    private static bool IsMailKitShape(SessionScript script) =>
        script.Steps.Count(s => s.Kind == StepKind.Auth) == (script.Role == ListenerRole.Submission ? 1 : 0)
        && script.Steps.Count(s => s.Kind == StepKind.Mail) == 1
        && script.Steps.First(s => s.Kind == StepKind.Mail).Text.Length > 0
        && script.Steps.Count(s => s.Kind == StepKind.Data) == 1
        && script.Steps[^1].Kind == StepKind.Quit;

    private static async Task RunMailKitAsync(SessionScript script, IPEndPoint server, CancellationToken cancellationToken)
    {
        var tls = script.Steps.Any(s => s.Kind == StepKind.StartTls);
        using var client = new SmtpClient
        {
            LocalEndPoint = new IPEndPoint(script.ClientIp, 0),
            LocalDomain = script.Steps.First(s => s.Kind == StepKind.Ehlo).Text.Trim('[', ']'),
            ServerCertificateValidationCallback = (_, _, _, errors) => Trusted(server, errors),
            Timeout = 60_000,
        };
        await client.ConnectAsync(server.Address.ToString(), server.Port, tls ? SecureSocketOptions.StartTls : SecureSocketOptions.None, cancellationToken);
        var auth = script.Steps.FirstOrDefault(s => s.Kind == StepKind.Auth);
        if (auth.Kind == StepKind.Auth)
        {
            client.AuthenticationMechanisms.RemoveWhere(m => !string.Equals(m, auth.Mechanism, StringComparison.OrdinalIgnoreCase));
            await client.AuthenticateAsync(auth.Text, auth.Secret, cancellationToken);
        }

        var mail = script.Steps.First(s => s.Kind == StepKind.Mail);
        var data = script.Steps.First(s => s.Kind == StepKind.Data);
        var recipients = script.Steps.Where(s => s.Kind == StepKind.Rcpt).Select(s => MailboxAddress.Parse(s.Text)).ToList();
        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse(mail.Text));
        message.To.AddRange(recipients);
        message.Subject = "simulated message";
        message.Body = new TextPart("plain") { Text = Body(data.Size) };
        await client.SendAsync(message, MailboxAddress.Parse(mail.Text), recipients, cancellationToken);
        await client.DisconnectAsync(true, cancellationToken);
    }

    private static async Task RunRawAsync(SessionScript script, IPEndPoint server, double speed, TimeProvider time, CancellationToken cancellationToken)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        socket.Bind(new IPEndPoint(script.ClientIp, 0));
        await socket.ConnectAsync(server, cancellationToken);
        Stream stream = new NetworkStream(socket, ownsSocket: false);
        var reader = new SmtpReplyReader(stream);
        if ((await reader.ReadAsync(cancellationToken)).Code != 220)
        {
            return;
        }

        var accepted = 0;
        var authenticated = false;
        foreach (var step in script.Steps)
        {
            if (step.Kind == StepKind.Auth && authenticated)
            {
                continue; // once in, a client stops guessing (the emulator does the same)
            }

            if (step.Delay > TimeSpan.Zero)
            {
                await Task.Delay(step.Delay / speed, time, cancellationToken);
            }

            int code;
            switch (step.Kind)
            {
                case StepKind.Ehlo:
                    code = await CommandAsync(stream, reader, "EHLO " + step.Text, cancellationToken);
                    break;
                case StepKind.StartTls:
                    code = await CommandAsync(stream, reader, "STARTTLS", cancellationToken);
                    if (code == 220)
                    {
                        var ssl = new SslStream(stream, leaveInnerStreamOpen: false, (_, _, _, errors) => Trusted(server, errors));
                        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "localhost" }, cancellationToken);
                        stream = ssl;
                        reader = new SmtpReplyReader(stream);
                    }

                    break;
                case StepKind.Auth when step.Mechanism == "LOGIN":
                    code = await CommandAsync(stream, reader, "AUTH LOGIN", cancellationToken);
                    if (code == 334)
                    {
                        code = await CommandAsync(stream, reader, B64(step.Text), cancellationToken);
                    }

                    if (code == 334)
                    {
                        code = await CommandAsync(stream, reader, B64(step.Secret), cancellationToken);
                    }

                    authenticated = code == 235;
                    break;
                case StepKind.Auth:
                    code = await CommandAsync(stream, reader, "AUTH PLAIN " + B64("\0" + step.Text + "\0" + step.Secret), cancellationToken);
                    authenticated = code == 235;
                    break;
                case StepKind.Mail:
                    accepted = 0;
                    code = await CommandAsync(stream, reader, "MAIL FROM:<" + step.Text + ">" + (step.Size > 0 ? " SIZE=" + step.Size.ToString(CultureInfo.InvariantCulture) : ""), cancellationToken);
                    break;
                case StepKind.Rcpt:
                    code = await CommandAsync(stream, reader, "RCPT TO:<" + step.Text + ">", cancellationToken);
                    if (code is >= 200 and < 300)
                    {
                        accepted++;
                    }

                    break;
                case StepKind.Data when accepted > 0:
                    code = await CommandAsync(stream, reader, "DATA", cancellationToken);
                    if (code == 354)
                    {
                        await stream.WriteAsync(Encoding.ASCII.GetBytes(Body(step.Size) + ".\r\n"), cancellationToken);
                        code = (await reader.ReadAsync(cancellationToken)).Code;
                    }

                    accepted = 0;
                    break;
                case StepKind.Data:
                case StepKind.Rset:
                    accepted = 0;
                    code = await CommandAsync(stream, reader, "RSET", cancellationToken);
                    break;
                default:
                    await CommandAsync(stream, reader, "QUIT", cancellationToken);
                    return;
            }

            if (code is 421 or 0 or 221)
            {
                return; // the server closed the session
            }
        }

        // No QUIT in the script: the client just goes away.
        socket.Close(0);
    }

    private static async Task<int> CommandAsync(Stream stream, SmtpReplyReader reader, string line, CancellationToken cancellationToken)
    {
        await stream.WriteAsync(Encoding.ASCII.GetBytes(line + "\r\n"), cancellationToken);
        await stream.FlushAsync(cancellationToken);
        return (await reader.ReadAsync(cancellationToken)).Code;
    }

    // The listener's certificate is usually self-signed; live mode only ever talks to loopback.
    private static bool Trusted(IPEndPoint server, SslPolicyErrors errors) => errors == SslPolicyErrors.None || IPAddress.IsLoopback(server.Address);

    private static string B64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));

    /// <summary>A plain message of about <paramref name="size"/> bytes, CRLF lines, no line starting with a dot.</summary>
    internal static string Body(int size)
    {
        var sb = new StringBuilder(size + 128);
        sb.Append("Subject: simulated message\r\nFrom: sim@example.net\r\n\r\n");
        const string line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor\r\n";
        while (sb.Length + line.Length <= size)
        {
            sb.Append(line);
        }

        return sb.ToString();
    }
}
