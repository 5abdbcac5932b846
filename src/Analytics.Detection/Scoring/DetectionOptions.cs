using System.ComponentModel.DataAnnotations;

namespace Analytics.Detection.Scoring;

/// <summary>The scorer inside <c>serve</c> (section <c>Detection</c>).</summary>
public sealed class DetectionOptions
{
    public const string SectionName = "Detection";

    /// <summary>Pause between scoring passes. Default 5 s.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "01:00:00")]
    public TimeSpan ScoreInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Directory of the model (model.json, classifier.zip, anomaly.zip). Default: ./models/default, else the copy shipped beside the binary.</summary>
    public string? ModelDirectory { get; set; }

    /// <summary>How far back the first pass looks for active entities. Default 10 min.</summary>
    [Range(typeof(TimeSpan), "00:01:00", "7.00:00:00")]
    public TimeSpan FirstPassLookback { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Turn the scorer off (events are still recorded). Default on.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>The model directory actually used: the configured one, ./models/default, or the shipped copy.</summary>
    public string ResolveModelDirectory()
    {
        if (!string.IsNullOrWhiteSpace(ModelDirectory))
        {
            return Path.GetFullPath(ModelDirectory);
        }

        var local = Path.GetFullPath(Path.Combine("models", "default"));
        return File.Exists(Path.Combine(local, "model.json")) ? local : Path.Combine(AppContext.BaseDirectory, "models", "default");
    }
}
