"""Protocol specs (specs/*.yaml) and the dataset readers and episode samplers they use."""
