using Analytics.Detection.Model;
using Microsoft.Extensions.Logging;

namespace Analytics.Detection.Scoring;

/// <summary>
/// Holds the model in use and swaps in a new one when the files change. A model that fails to load
/// is refused with a clear log line and the previous one stays in use; with none at all, the scorer
/// falls back to the rules.
/// </summary>
public sealed partial class ModelProvider
{
    private readonly ILogger _logger;
    private DetectionModel? _current;
    private DateTime _loadedStamp;

    public ModelProvider(string directory, ILogger logger)
    {
        Directory = directory;
        _logger = logger;
    }

    public string Directory { get; }

    public DetectionModel? Current => Volatile.Read(ref _current);

    public string? LastError { get; private set; }

    /// <summary>Loads the model when its card changed since the last load. Returns the model in use.</summary>
    public DetectionModel? Refresh()
    {
        var card = Path.Combine(Directory, DetectionModel.CardFile);
        var stamp = File.Exists(card) ? File.GetLastWriteTimeUtc(card) : DateTime.MinValue;
        if (stamp == _loadedStamp && (_current is not null || LastError is not null))
        {
            return _current;
        }

        _loadedStamp = stamp;
        try
        {
            var model = DetectionModel.Load(Directory);
            Volatile.Write(ref _current, model);
            LastError = null;
            LogLoaded(_logger, model.Version, Directory);
        }
        catch (ModelLoadException ex)
        {
            LastError = ex.Message;
            if (_current is null)
            {
                LogRefusedNoModel(_logger, ex.Message);
            }
            else
            {
                LogRefusedKeeping(_logger, ex.Message, _current.Version);
            }
        }

        return _current;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Detection model {Version} loaded from {Directory}")]
    private static partial void LogLoaded(ILogger logger, string version, string directory);

    [LoggerMessage(Level = LogLevel.Error, Message = "Detection model refused: {Reason}. Scoring with the rules until a valid model is in place")]
    private static partial void LogRefusedNoModel(ILogger logger, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "New detection model refused: {Reason}. Still scoring with model {Version}")]
    private static partial void LogRefusedKeeping(ILogger logger, string reason, string version);
}
